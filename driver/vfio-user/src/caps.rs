//! The capabilities object carried as JSON in VERSION messages.
//!
//! The version data is `{"capabilities": {...}}`, UTF-8, terminated by a NUL
//! byte. Every capability is optional; the accessors apply the spec's
//! defaults when the peer omitted one (`max_msg_fds` 1,
//! `max_data_xfer_size` 1 MiB, `max_dma_maps` 65535, `pgsizes` 4 KiB).
//! Capabilities this crate does not know are kept in [`Capabilities::other`]
//! and written back unchanged.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default for `max_msg_fds` when the peer does not specify it.
pub const DEFAULT_MAX_MSG_FDS: u32 = 1;
/// Default for `max_data_xfer_size` when the peer does not specify it.
pub const DEFAULT_MAX_DATA_XFER_SIZE: u64 = 1 << 20;
/// Default for `max_dma_maps` when the peer does not specify it.
pub const DEFAULT_MAX_DMA_MAPS: u32 = 65535;
/// Default for `pgsizes` when the peer does not specify it (4 KiB pages only).
pub const DEFAULT_PGSIZES: u64 = 4096;

/// Twin-socket parameters (`capabilities.twin_socket`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinSocket {
    /// Whether the sender supports twin-socket mode (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported: Option<bool>,
    /// In a server's reply: index, in the reply's fd array, of the client end
    /// of the server-to-client socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_index: Option<u32>,
}

/// The capabilities object of a VERSION message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Most file descriptors the sender can receive in one message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msg_fds: Option<u32>,
    /// Largest `count` the sender accepts in a data transfer message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_data_xfer_size: Option<u64>,
    /// Most DMA mappings valid at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_dma_maps: Option<u32>,
    /// Page sizes supported for DMA maps, or'ed together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgsizes: Option<u64>,
    /// Twin-socket mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin_socket: Option<TwinSocket>,
    /// Whether REGION_WRITE_MULTI is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_multiple: Option<bool>,
    /// Capabilities this crate does not interpret, kept verbatim.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct VersionData {
    #[serde(default)]
    capabilities: Option<Capabilities>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

impl Capabilities {
    /// `max_msg_fds`, or the spec's default of 1.
    pub fn max_msg_fds(&self) -> u32 {
        self.max_msg_fds.unwrap_or(DEFAULT_MAX_MSG_FDS)
    }
    /// `max_data_xfer_size`, or the spec's default of 1 MiB.
    pub fn max_data_xfer_size(&self) -> u64 {
        self.max_data_xfer_size
            .unwrap_or(DEFAULT_MAX_DATA_XFER_SIZE)
    }
    /// `max_dma_maps`, or the spec's default of 65535.
    pub fn max_dma_maps(&self) -> u32 {
        self.max_dma_maps.unwrap_or(DEFAULT_MAX_DMA_MAPS)
    }
    /// `pgsizes`, or the spec's default of 4 KiB.
    pub fn pgsizes(&self) -> u64 {
        self.pgsizes.unwrap_or(DEFAULT_PGSIZES)
    }
    /// Whether the sender declared twin-socket support.
    pub fn twin_socket_supported(&self) -> bool {
        self.twin_socket
            .as_ref()
            .and_then(|t| t.supported)
            .unwrap_or(false)
    }
    /// The fd index a server's reply designates for the twin socket, when
    /// twin-socket mode was enabled.
    pub fn twin_socket_fd_index(&self) -> Option<u32> {
        self.twin_socket
            .as_ref()
            .filter(|t| t.supported == Some(true))
            .and_then(|t| t.fd_index)
    }

    /// Encode as VERSION data: `{"capabilities": ...}` and a terminating NUL.
    pub fn to_version_data(&self) -> Vec<u8> {
        let data = VersionData {
            capabilities: Some(self.clone()),
            other: Default::default(),
        };
        let mut v = serde_json::to_vec(&data).expect("capabilities always serialise");
        v.push(0);
        v
    }

    /// Parse VERSION data. An empty slice (the data is optional) and a
    /// missing `capabilities` object give all defaults. One terminating NUL
    /// is accepted (and expected); any other NUL is an error.
    pub fn from_version_data(msg_id: u16, data: &[u8]) -> Result<Capabilities> {
        let data = data.strip_suffix(&[0]).unwrap_or(data);
        if data.is_empty() {
            return Ok(Capabilities::default());
        }
        if data.contains(&0) {
            return Err(Error::BadField {
                command: crate::Command::Version,
                msg_id,
                field: "version data",
                reason: "NUL byte inside the JSON text".into(),
            });
        }
        let v: VersionData =
            serde_json::from_slice(data).map_err(|source| Error::Json { msg_id, source })?;
        Ok(v.capabilities.unwrap_or_default())
    }
}
