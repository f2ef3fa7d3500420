//! The Verilated RTL behind a safe, cycle-level interface.
//!
//! This is the only module that calls into the C++ model; it owns the
//! model's lifetime and hides the FFI. Port meanings are in
//! `fpga/rtl/PORTS.md`.

use std::ffi::CString;
use std::path::Path;

/// Datapath width in bytes the model was built with.
pub const DB: usize = 32;

/// Inputs applied before a rising edge. Mirrors `FdmaIn` in csrc/model.cpp.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Inputs {
    /// Active-low synchronous reset.
    pub rst_n: u8,
    /// Register access request.
    pub reg_req_valid: u8,
    /// Register access is a write.
    pub reg_req_write: u8,
    /// Host read request accepted.
    pub hr_req_ready: u8,
    /// Host read completion beat presented.
    pub hr_rsp_valid: u8,
    /// Last beat of the completion.
    pub hr_rsp_last: u8,
    /// The read failed.
    pub hr_rsp_err: u8,
    /// Host write beat accepted.
    pub hw_ready: u8,
    /// Card read request accepted.
    pub cr_req_ready: u8,
    /// Card read completion beat presented.
    pub cr_rsp_valid: u8,
    /// Last beat of the card completion.
    pub cr_rsp_last: u8,
    /// The card read failed.
    pub cr_rsp_err: u8,
    /// Card write beat accepted.
    pub cw_ready: u8,
    /// Interrupt message accepted.
    pub irq_ready: u8,
    pad: [u8; 2],
    /// Register byte offset.
    pub reg_req_addr: u32,
    /// Register write data.
    pub reg_req_wdata: u32,
    /// Host completion data (one aligned word).
    pub hr_rsp_data: [u8; DB],
    /// Card completion data (one aligned word).
    pub cr_rsp_data: [u8; DB],
}

/// Outputs after a rising edge. Mirrors `FdmaOut` in csrc/model.cpp.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Outputs {
    /// Register response valid.
    pub reg_rsp_valid: u8,
    /// Host read request valid.
    pub hr_req_valid: u8,
    /// Engine accepts host completion beats.
    pub hr_rsp_ready: u8,
    /// Host write beat valid.
    pub hw_valid: u8,
    /// Last beat of a host write request.
    pub hw_last: u8,
    /// Card read request valid.
    pub cr_req_valid: u8,
    /// Engine accepts card completion beats.
    pub cr_rsp_ready: u8,
    /// Card write beat valid.
    pub cw_valid: u8,
    /// Last beat of a card write request.
    pub cw_last: u8,
    /// Interrupt message valid.
    pub irq_valid: u8,
    /// Engine is quiescent (D1).
    pub quiescent: u8,
    pad: [u8; 1],
    /// Register read data.
    pub reg_rsp_rdata: u32,
    /// Host read request length in bytes.
    pub hr_req_len: u32,
    /// Card read request length in bytes.
    pub cr_req_len: u32,
    /// Host write byte enables.
    pub hw_strb: u32,
    /// Card write byte enables.
    pub cw_strb: u32,
    /// Interrupt vector.
    pub irq_vector: u32,
    pad2: u32,
    /// Host read request address.
    pub hr_req_addr: u64,
    /// Host write beat word address.
    pub hw_addr: u64,
    /// Card read request address.
    pub cr_req_addr: u64,
    /// Card write beat word address.
    pub cw_addr: u64,
    /// Device cycle counter.
    pub cycle_count: u64,
    /// Host write data.
    pub hw_data: [u8; DB],
    /// Card write data.
    pub cw_data: [u8; DB],
}

#[repr(C)]
struct FdmaModel {
    _opaque: [u8; 0],
}

extern "C" {
    fn fdma_model_new(trace_path: *const libc::c_char) -> *mut FdmaModel;
    fn fdma_model_free(m: *mut FdmaModel);
    fn fdma_model_tick(m: *mut FdmaModel, inp: *const Inputs, out: *mut Outputs);
    fn fdma_model_peek(m: *mut FdmaModel, out: *mut Outputs);
    fn fdma_model_flush(m: *mut FdmaModel);
}

/// Errors creating a model.
#[derive(Debug, thiserror::Error)]
pub enum RtlError {
    /// The trace path contains a NUL byte.
    #[error("trace path {0:?} is not representable as a C string")]
    BadTracePath(std::path::PathBuf),
}

/// One instance of the Verilated engine.
///
/// Not `Sync`: one thread clocks it. It is `Send`: the model has no thread
/// affinity (Verilator contexts are single-threaded here).
pub struct RtlModel {
    ptr: *mut FdmaModel,
    out: Outputs,
}

// SAFETY: the C++ model holds no thread-local state (its VerilatedContext is
// owned by the instance and runs with one thread) and is only accessed through
// `&mut self`, so moving it to another thread is sound.
unsafe impl Send for RtlModel {}

impl RtlModel {
    /// Build a model, optionally writing an FST waveform to `trace`.
    /// The model starts with `rst_n` low; clock it with `rst_n = 1` to run.
    pub fn new(trace: Option<&Path>) -> Result<Self, RtlError> {
        let c = match trace {
            Some(p) => Some(
                CString::new(p.as_os_str().as_encoded_bytes())
                    .map_err(|_| RtlError::BadTracePath(p.to_path_buf()))?,
            ),
            None => None,
        };
        let cptr = c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: `cptr` is null or a valid NUL-terminated string that outlives
        // the call; the function returns a new heap object we own.
        let ptr = unsafe { fdma_model_new(cptr) };
        assert!(!ptr.is_null(), "fdma_model_new returned null");
        let mut out = Outputs::default();
        // SAFETY: `ptr` is a live model; `out` is a valid Outputs to fill.
        unsafe { fdma_model_peek(ptr, &mut out) };
        Ok(RtlModel { ptr, out })
    }

    /// Apply `inp`, clock one cycle, and return the outputs after the edge.
    #[inline]
    pub fn tick(&mut self, inp: &Inputs) -> &Outputs {
        // SAFETY: `ptr` is a live model owned by self; `inp` and `self.out`
        // are valid, properly laid out (#[repr(C)] mirrors of the C structs).
        unsafe { fdma_model_tick(self.ptr, inp, &mut self.out) };
        &self.out
    }

    /// The outputs after the last edge.
    #[inline]
    pub fn outputs(&self) -> &Outputs {
        &self.out
    }

    /// Flush the waveform file, if tracing.
    pub fn flush_trace(&mut self) {
        // SAFETY: `ptr` is a live model owned by self.
        unsafe { fdma_model_flush(self.ptr) };
    }
}

impl Drop for RtlModel {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from fdma_model_new and is freed exactly once here.
        unsafe { fdma_model_free(self.ptr) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_c() {
        // Offsets the C structs have on x86_64 / aarch64 (natural alignment).
        assert_eq!(std::mem::offset_of!(Inputs, reg_req_addr), 16);
        assert_eq!(std::mem::offset_of!(Inputs, hr_rsp_data), 24);
        assert_eq!(std::mem::size_of::<Inputs>(), 24 + 2 * DB);
        assert_eq!(std::mem::offset_of!(Outputs, reg_rsp_rdata), 12);
        assert_eq!(std::mem::offset_of!(Outputs, hr_req_addr), 40);
        assert_eq!(std::mem::offset_of!(Outputs, hw_data), 80);
        assert_eq!(std::mem::size_of::<Outputs>(), 80 + 2 * DB);
    }
}
