//! OpenSSH public keys as operators give them to a deploy (`--ssh-key FILE`).
//!
//! The keys end up in shell (`late_command`), kickstart and YAML files that run as root in the
//! installer, so only what `ssh-keygen` writes is accepted: a known key type, the base64 blob
//! (which must decode and name the same type), and an optional comment of printable characters
//! without quotes, backslashes, `$` or backticks. Templates escape them as well; this is the first
//! line of defence, and the one that gives the operator a clear error.

use crate::FieldError;
use crate::node::is_line_breaking;

/// Most keys one deploy may carry.
pub const MAX_KEYS: usize = 32;
/// Longest key line accepted, in bytes (an RSA 16384-bit key is about 2.8 KB).
pub const MAX_KEY_LEN: usize = 16 << 10;
/// Longest comment accepted, in characters.
pub const MAX_COMMENT_LEN: usize = 256;

/// The key types OpenSSH accepts in `authorized_keys` (DSA is gone since OpenSSH 9.8).
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Checks a deploy's keys: at most [`MAX_KEYS`], each one valid (see [`validate_key`]). Errors
/// name the key by its index (`ssh_authorized_keys[3]`).
pub fn validate_keys(keys: &[String]) -> Result<(), FieldError> {
    if keys.len() > MAX_KEYS {
        return Err(FieldError::invalid(
            "ssh_authorized_keys",
            format!("{} keys: a deploy takes at most {MAX_KEYS}", keys.len()),
        ));
    }
    for (i, key) in keys.iter().enumerate() {
        validate_key(key)
            .map_err(|reason| FieldError::invalid(format!("ssh_authorized_keys[{i}]"), reason))?;
    }
    Ok(())
}

/// Checks one `TYPE BASE64 [COMMENT]` line.
pub fn validate_key(line: &str) -> Result<(), String> {
    if line.len() > MAX_KEY_LEN {
        return Err(format!("longer than {MAX_KEY_LEN} bytes"));
    }
    let line = line.trim_matches(|c| c == ' ' || c == '\t');
    let mut parts = line.splitn(3, [' ', '\t']);
    let kind = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default();
    let comment = parts.next().unwrap_or_default().trim();
    if !KEY_TYPES.contains(&kind) {
        let shown: String = kind.chars().take(40).collect();
        return Err(format!(
            "not one OpenSSH public key line (\"TYPE BASE64 [COMMENT]\"): {shown:?} is not one \
             of: {}",
            KEY_TYPES.join(", ")
        ));
    }
    let decoded = decode_base64(blob).ok_or("the key is not valid base64")?;
    if embedded_type(&decoded) != Some(kind.as_bytes()) {
        return Err(format!("the key's data is not a {kind} key"));
    }
    if comment.chars().count() > MAX_COMMENT_LEN {
        return Err(format!(
            "the comment is longer than {MAX_COMMENT_LEN} characters"
        ));
    }
    if let Some(c) = comment
        .chars()
        .find(|&c| is_line_breaking(c) || matches!(c, '\'' | '"' | '`' | '\\' | '$'))
    {
        return Err(format!(
            "the comment may not contain {c:?} (quotes, backslashes, '$', '`' and control \
             characters are refused)"
        ));
    }
    Ok(())
}

/// The type name at the start of a key blob (a uint32 length, then the name).
fn embedded_type(blob: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    blob.get(4..4usize.checked_add(len)?)
}

/// Standard base64 with padding, as OpenSSH writes it; `None` for anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let pad = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if pad > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (n, chunk) in bytes.chunks(4).enumerate() {
        let last = n == bytes.len() / 4 - 1;
        let mut acc = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            let v = match b {
                b'A'..=b'Z' => b - b'A',
                b'a'..=b'z' => b - b'a' + 26,
                b'0'..=b'9' => b - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' if last && i >= 4 - pad => 0,
                _ => return None,
            };
            acc = acc << 6 | u32::from(v);
        }
        let [_, a, b, c] = acc.to_be_bytes();
        let keep = if last { 3 - pad } else { 3 };
        out.extend_from_slice(&[a, b, c][..keep]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ed25519 public key (from `ssh-keygen -t ed25519`).
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB+0a0cIv5rCBa0oZ233Jkz48O8miF9/nu4+WWu3cQ/y";

    #[test]
    fn real_keys_pass() {
        validate_key(ED25519).unwrap();
        validate_key(&format!("{ED25519} alice@laptop")).unwrap();
        validate_key(&format!("{ED25519} Anne-Marie O Brien (work, 2026)")).unwrap();
    }

    #[test]
    fn quotes_and_shell_in_comments_are_refused() {
        for comment in [
            "O'Brien laptop; touch /target/pwned; echo '",
            "say \"hi\"",
            "$(reboot)",
            "`id`",
            "back\\slash",
            "line\u{2028}break",
            "nel\u{85}x",
            "tab\tin\rside",
        ] {
            let err = validate_key(&format!("{ED25519} {comment}")).unwrap_err();
            assert!(err.contains("comment"), "{comment:?}: {err}");
        }
        let long = "x".repeat(MAX_COMMENT_LEN + 1);
        assert!(validate_key(&format!("{ED25519} {long}")).is_err());
    }

    #[test]
    fn types_and_blobs_are_checked() {
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
            "from=\"10.0.0.1\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
            "ssh-ed25519 not-base64!",
            "ssh-ed25519 AAAA",
            // An RSA blob labelled ed25519.
            "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAAAgQC",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl===",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key(&"A".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn a_deploy_takes_a_bounded_number_of_keys() {
        let keys = vec![ED25519.to_owned(); MAX_KEYS];
        validate_keys(&keys).unwrap();
        let keys = vec![ED25519.to_owned(); MAX_KEYS + 1];
        assert_eq!(
            validate_keys(&keys).unwrap_err().field,
            "ssh_authorized_keys"
        );
        let keys = vec![ED25519.to_owned(), "ssh-rsa x".into()];
        assert_eq!(
            validate_keys(&keys).unwrap_err().field,
            "ssh_authorized_keys[1]"
        );
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("aGkh").unwrap(), b"hi!");
        assert_eq!(decode_base64("aA==").unwrap(), b"h");
        assert!(decode_base64("a===").is_none());
        assert!(decode_base64("aG=k").is_none());
        assert!(decode_base64("=aGk").is_none());
    }
}
