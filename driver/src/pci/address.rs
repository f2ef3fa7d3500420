//! PCI function addresses as the kernel names them: `dddd:bb:dd.f`.

use std::fmt;
use std::str::FromStr;

/// The address of one PCI function: domain (segment), bus, device, function.
///
/// Parsed from `0000:01:00.0` or the short `01:00.0` (domain 0), as `lspci`
/// prints them; shown as the kernel's sysfs names them (`0000:01:00.0`,
/// lowercase hex). The field order makes the derived `Ord` sort the way
/// `lspci -D` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI domain (segment). Usually 0; some hosts (VMD, multi-segment
    /// servers) use more than 16 bits, hence `u32`.
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0–31.
    pub dev: u8,
    /// Function number, 0–7.
    pub func: u8,
}

impl PciAddress {
    /// An address from its parts; `None` when `dev` > 31 or `func` > 7.
    pub fn new(domain: u32, bus: u8, dev: u8, func: u8) -> Option<PciAddress> {
        (dev < 32 && func < 8).then_some(PciAddress {
            domain,
            bus,
            dev,
            func,
        })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.dev, self.func
        )
    }
}

/// A string that is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid PCI address {input:?}: {why} (expected DDDD:BB:DD.F such as 0000:01:00.0, or BB:DD.F)"
)]
pub struct AddressError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for PciAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<PciAddress, AddressError> {
        let err = |why| AddressError {
            input: s.to_string(),
            why,
        };
        let (rest, func) = s.rsplit_once('.').ok_or_else(|| err("no `.F` function"))?;
        let mut parts = rest.rsplitn(3, ':');
        let dev = parts.next().unwrap_or_default();
        let bus = parts.next().ok_or_else(|| err("no `BB:` bus"))?;
        let domain = parts.next();
        let hex = |t: &str, max_digits: usize, what| {
            if t.is_empty() || t.len() > max_digits || !t.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err(what));
            }
            // Cannot fail: at most 8 hex digits fit in a u32.
            u32::from_str_radix(t, 16).map_err(|_| err(what))
        };
        let domain = match domain {
            None => 0,
            Some(d) => hex(d, 8, "the domain must be 1 to 8 hex digits")?,
        };
        let bus = hex(bus, 2, "the bus must be 1 or 2 hex digits")?;
        let dev = hex(dev, 2, "the device must be 1 or 2 hex digits")?;
        let func = hex(func, 1, "the function must be one digit 0-7")?;
        // The casts are lossless: at most two hex digits each.
        PciAddress::new(domain, bus as u8, dev as u8, func as u8).ok_or_else(|| {
            err(if dev >= 32 {
                "the device number must be below 0x20"
            } else {
                "the function must be one digit 0-7"
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn pci_address_parses_full_and_short_forms() {
        assert_eq!(a("0000:01:00.0"), PciAddress::new(0, 1, 0, 0).unwrap());
        assert_eq!(a("01:00.0"), a("0000:01:00.0"));
        assert_eq!(
            a("0000:AF:1f.7"),
            PciAddress::new(0, 0xaf, 0x1f, 7).unwrap()
        );
        assert_eq!(a("10000:e1:00.3").domain, 0x10000);
        assert_eq!(a("0000:AF:1F.7").to_string(), "0000:af:1f.7");
        assert_eq!(a("1:2.3").to_string(), "0000:01:02.3");
        assert_eq!(a("10000:e1:00.3").to_string(), "10000:e1:00.3");
    }

    #[test]
    fn pci_address_rejects_malformed_input_with_a_reason() {
        for (s, why) in [
            ("", "function"),
            ("0000:01:00", "function"),
            ("01.0", "bus"),
            ("0000:01:00.8", "0-7"),
            ("0000:01:20.0", "below 0x20"),
            ("0000:001:00.0", "bus"),
            ("0000:01:00.00", "function"),
            ("zz:00.0", "bus"),
            ("123456789:01:00.0", "domain"),
            ("x:0000:01:00.0", "domain"),
            ("sim:/tmp/x.sock", "bus"),
        ] {
            let e = s.parse::<PciAddress>().expect_err(s);
            assert!(e.to_string().contains(why), "{s:?}: {e}");
            assert!(e.to_string().contains("0000:01:00.0"), "{e}");
        }
    }

    #[test]
    fn pci_address_sorts_like_lspci() {
        let mut v = [a("0001:00:00.0"), a("02:00.0"), a("01:1f.0"), a("01:00.1")];
        v.sort();
        let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        assert_eq!(
            s,
            [
                "0000:01:00.1",
                "0000:01:1f.0",
                "0000:02:00.0",
                "0001:00:00.0"
            ]
        );
    }
}
