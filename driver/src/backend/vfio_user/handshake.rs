//! Connecting: VERSION (twin-socket mode required), DEVICE_GET_INFO,
//! REGION_INFO for every region, IRQ_INFO for every kind, then the DMA
//! service thread.

use super::*;

impl VfioUserBackend {
    pub(super) fn connect_with(
        path: &Path,
        opts: &VfioUserOptions,
        pin: bool,
    ) -> BResult<VfioUserBackend> {
        let name = format!("sim:{}", path.display());
        let max_xfer = opts.max_data_xfer_size as usize;
        if !(4096..=1 << 30).contains(&max_xfer) {
            return Err(BackendError::Invalid {
                device: name,
                op: "connect".into(),
                why: format!("max_data_xfer_size {max_xfer} outside [4096, 1 GiB]"),
            });
        }
        let conn = Connection::connect(path, Limits::default()).map_err(|e| match e {
            fdma_vfio_user::Error::Io { source, .. } => BackendError::Open {
                device: name.clone(),
                source,
            },
            e => BackendError::Open {
                device: name.clone(),
                source: std::io::Error::other(e),
            },
        })?;
        crate::fork::install();
        let pinner = if pin { pin::Pinner::new(&name) } else { None };
        let shared = Arc::new(Shared {
            lost: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            maps: RwLock::new(BTreeMap::new()),
            pinner,
        });
        let client = Client::new(name.clone(), conn, shared.clone(), opts.reply_timeout);

        // VERSION: twin-socket mode is required.
        let caps = Capabilities {
            max_msg_fds: Some(CLIENT_MAX_MSG_FDS),
            max_data_xfer_size: Some(max_xfer as u64),
            twin_socket: Some(TwinSocket {
                supported: Some(true),
                fd_index: None,
            }),
            ..Default::default()
        };
        let req = Request::Version(Version {
            major: consts::VERSION_MAJOR,
            minor: consts::VERSION_MINOR,
            caps: Some(caps),
        });
        let (r, mut fds) = match client.call(|| "VERSION".into(), &req, &[]) {
            Err(BackendError::Refused { errno, .. }) if errno == libc::EBUSY => {
                return Err(busy(&name, path))
            }
            r => r?,
        };
        let Reply::Version(v) = r else {
            return Err(client.unexpected("VERSION".into(), &r));
        };
        if v.major != consts::VERSION_MAJOR {
            return Err(client.invalid(
                "VERSION".into(),
                format!("server speaks protocol {}.{}", v.major, v.minor),
            ));
        }
        let sc = v.capabilities();
        let twin = match sc.twin_socket_fd_index() {
            Some(i) if (i as usize) < fds.len() => fds.swap_remove(i as usize),
            _ => {
                return Err(client.invalid(
                    "VERSION".into(),
                    "the server did not grant the twin socket; this client needs DMA \
                     requests on their own socket",
                ))
            }
        };
        drop(fds);
        let xfer = max_xfer.min(sc.max_data_xfer_size().min(1 << 30) as usize);
        client.with_link(|l| {
            l.conn.set_limits(Limits::for_data_xfer(
                xfer as u64,
                CLIENT_MAX_MSG_FDS as usize,
            ))
        });

        // DEVICE_GET_INFO.
        let di = Request::DeviceGetInfo(DeviceInfo {
            argsz: DeviceInfo::SIZE as u32,
            ..Default::default()
        });
        let (r, _) = client.call(|| "DEVICE_GET_INFO".into(), &di, &[])?;
        let Reply::DeviceGetInfo(info) = r else {
            return Err(client.unexpected("DEVICE_GET_INFO".into(), &r));
        };
        if info.flags & device::FLAG_PCI == 0 {
            return Err(client.invalid("DEVICE_GET_INFO".into(), "not a PCI device"));
        }
        if !(region::PCI_CONFIG + 1..=64).contains(&info.num_regions) {
            return Err(client.invalid(
                "DEVICE_GET_INFO".into(),
                format!("{} regions (a PCI device has 8 to 64)", info.num_regions),
            ));
        }
        if !(1..=64).contains(&info.num_irqs) {
            return Err(client.invalid(
                "DEVICE_GET_INFO".into(),
                format!("{} IRQ kinds (expected 1 to 64)", info.num_irqs),
            ));
        }

        let mut regions = BTreeMap::new();
        for index in 0..info.num_regions {
            if let Some(e) = region_info(&client, index)? {
                regions.insert(index, e);
            }
        }
        if !regions.contains_key(&region::PCI_CONFIG) {
            return Err(client.invalid("DEVICE_GET_REGION_INFO".into(), "no config space"));
        }
        let mut irq_counts = HashMap::new();
        for index in 0..info.num_irqs.min(irq::PCI_NUM_IRQS) {
            let op = || format!("DEVICE_GET_IRQ_INFO {index}");
            let req = Request::DeviceGetIrqInfo(IrqInfo {
                argsz: IrqInfo::SIZE as u32,
                index,
                ..Default::default()
            });
            match client.call(op, &req, &[]) {
                Ok((Reply::DeviceGetIrqInfo(i), _)) if i.index == index => {
                    let count = if i.flags & irq::INFO_EVENTFD != 0 {
                        i.count
                    } else {
                        0
                    };
                    irq_counts.insert(index, count);
                }
                Ok((r, _)) => return Err(client.unexpected(op(), &r)),
                Err(BackendError::Refused { .. }) => {}
                Err(e) => return Err(e),
            }
        }

        let vaddr_pinned = shared.pinner.is_some();
        let limits = DmaLimits {
            max_mappings: sc.max_dma_maps().min(pin::MAX_SLOTS),
            max_mapping_size: pin::MAX_BUFFER,
            page_sizes: sc.pgsizes(),
            iova_ranges: IOVA_RANGES.to_vec(),
            vaddr_pinned,
        };

        // The DMA service thread.
        let twin = Arc::new(twin);
        let scratch = if vaddr_pinned {
            Some(
                pin::Scratch::new(max_xfer).map_err(|source| BackendError::Sys {
                    device: name.clone(),
                    op: "scratch memfd".into(),
                    source,
                })?,
            )
        } else {
            None
        };
        let svc = Service {
            shared: shared.clone(),
            twin: twin.clone(),
            buf: vec![0u8; max_xfer + 64],
            scratch,
            max_xfer,
            device: name.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("fdma-vu-dma".into())
            .spawn(move || svc.run())
            .map_err(|source| BackendError::Sys {
                device: name.clone(),
                op: "spawn the DMA service thread".into(),
                source,
            })?;
        log::info!(
            "{name}: connected (protocol {}.{}, {} regions, transfers up to {xfer} bytes, \
             vaddr mappings {})",
            v.major,
            v.minor,
            regions.len(),
            if vaddr_pinned { "pinned" } else { "NOT pinned" }
        );
        Ok(VfioUserBackend {
            client,
            regions,
            irq_counts,
            limits,
            xfer,
            server_max_fds: sc.max_msg_fds().max(1) as usize,
            reset: info.flags & device::FLAG_RESET != 0,
            twin,
            service: Mutex::new(Some(handle)),
            map_lock: Mutex::new(()),
        })
    }
}

/// The error for a simulator that refused us because it serves another
/// client, naming that client when the simulator's announcement says who it
/// is (see `fdma_vfio_user::announce`).
fn busy(name: &str, path: &Path) -> BackendError {
    let holder = fdma_vfio_user::announce::find(path)
        .and_then(|a| a.client_pid)
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            match comm.trim() {
                "" => format!("process {pid}"),
                c => format!("process {pid} ({c})"),
            }
        })
        .unwrap_or_else(|| "another client".into());
    BackendError::Busy {
        device: name.to_string(),
        source: std::io::Error::other(format!(
            "the simulator at {} serves one client at a time and {holder} is connected; \
             wait for it to finish, or start another simulator",
            path.display()
        )),
    }
}

/// REGION_INFO for `index`, retried with the size the server asks for when
/// the capabilities do not fit. `None` for an absent region.
fn region_info(client: &Client, index: u32) -> BResult<Option<RegionEntry>> {
    let op = || format!("DEVICE_GET_REGION_INFO {index}");
    let mut argsz = 4096u32;
    for _ in 0..2 {
        let req = Request::DeviceGetRegionInfo(RegionInfoRequest { argsz, index });
        let (r, mut fds) = match client.call(op, &req, &[]) {
            Ok(x) => x,
            Err(BackendError::Refused { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Reply::DeviceGetRegionInfo(info) = r else {
            return Err(client.unexpected(op(), &r));
        };
        if info.index != index {
            return Err(client.unexpected(op(), &Reply::DeviceGetRegionInfo(info)));
        }
        if info.argsz > argsz && info.caps.is_empty() && info.flags & region::FLAG_CAPS != 0 {
            argsz = info.argsz;
            continue;
        }
        if info.size == 0 {
            return Ok(None);
        }
        let mmap = info.flags & region::FLAG_MMAP != 0;
        let file = if mmap && !fds.is_empty() {
            Some(File::from(fds.swap_remove(0)))
        } else {
            None
        };
        let mut areas: Vec<Range<u64>> = info
            .caps
            .iter()
            .filter_map(|c| match c {
                RegionCap::SparseMmap(a) => Some(a),
                _ => None,
            })
            .flatten()
            .filter(|a| a.size > 0 && a.offset.checked_add(a.size).is_some_and(|e| e <= info.size))
            .map(|a| a.offset..a.offset + a.size)
            .collect();
        let sparse = info
            .caps
            .iter()
            .any(|c| matches!(c, RegionCap::SparseMmap(_)));
        if file.is_some() && !sparse {
            areas.push(0..info.size);
        }
        if file.is_none() {
            if mmap {
                log::warn!(
                    "{}: region {index} is mmappable but came without an fd",
                    client.name
                );
            }
            areas.clear();
        }
        return Ok(Some(RegionEntry {
            info: RegionInfo {
                index,
                size: info.size,
                read: info.flags & region::FLAG_READ != 0,
                write: info.flags & region::FLAG_WRITE != 0,
                mmap_areas: areas,
            },
            mmap_offset: info.offset,
            file,
        }));
    }
    Err(client.invalid(op(), "the server keeps asking for a larger reply"))
}
