use std::fmt;
use std::str::FromStr;

use crate::FieldError;

/// An Ethernet MAC address, printed as lowercase `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = FieldError;

    /// Accepts `52:54:00:36:ac:b1`, `52-54-00-36-AC-B1` and `5254.0036.acb1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            FieldError::invalid(
                "",
                format!(
                    "{s:?} is not a MAC address (expected six hex pairs like 52:54:00:36:ac:b1)"
                ),
            )
        };
        let hex: String = if s.len() == 17 {
            let sep = s.as_bytes()[2];
            if sep != b':' && sep != b'-' {
                return Err(bad());
            }
            let mut out = String::with_capacity(12);
            for (i, part) in s.split(sep as char).enumerate() {
                if i > 5 || part.len() != 2 {
                    return Err(bad());
                }
                out.push_str(part);
            }
            out
        } else if s.len() == 14 && s.as_bytes()[4] == b'.' && s.as_bytes()[9] == b'.' {
            s.replace('.', "")
        } else {
            return Err(bad());
        };
        if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 6];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        let mac = MacAddr(bytes);
        if bytes == [0; 6] || bytes == [0xff; 6] {
            return Err(FieldError::invalid(
                "",
                format!("{mac} cannot be a NIC's address"),
            ));
        }
        if bytes[0] & 1 == 1 {
            return Err(FieldError::invalid(
                "",
                format!("{mac} is a multicast address, not a NIC's address"),
            ));
        }
        Ok(mac)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_spellings() {
        let want = "52:54:00:36:ac:b1";
        for s in ["52:54:00:36:ac:b1", "52-54-00-36-AC-B1", "5254.0036.acb1"] {
            assert_eq!(s.parse::<MacAddr>().unwrap().to_string(), want, "{s}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "52:54:00:36:ac",
            "52:54:00:36:ac:b1:00",
            "52:54:00:36:ac:zz",
            "52:54-00:36:ac:b1",
            "52540036acb1",
            "00:00:00:00:00:00",
            "ff:ff:ff:ff:ff:ff",
            "01:00:5e:00:00:01",
            "52:54:00:36:ac:+1",
        ] {
            let err = s.parse::<MacAddr>().expect_err(s);
            assert!(
                err.reason.contains("MAC") || err.reason.contains("address"),
                "{s}: {err}"
            );
        }
    }
}
