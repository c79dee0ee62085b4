//! The built-in installer templates with arbitrary ssh keys and root password hashes: rendering
//! never panics, and `shell_quote` / `ks_quote` always give back the exact value when read the
//! way the shell and kickstart's shlex read them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xcat3_image::render::{example_context, ks_quote, render, shell_quote};

/// A POSIX shell reading one single-quoted word (`'...'` pieces joined by `\'`).
fn shell_unquote(word: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = word;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("\\'") {
            out.push('\'');
            rest = r;
        } else {
            let r = rest.strip_prefix('\'')?;
            let end = r.find('\'')?;
            out.push_str(&r[..end]);
            rest = &r[end + 1..];
        }
    }
    Some(out)
}

/// shlex (non-POSIX-escape mode aside) reading one double-quoted word.
fn ks_unquote(word: &str) -> Option<String> {
    let inner = word.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let key = parts.next().unwrap_or_default().to_owned();
    let hash = parts.next().map(str::to_owned);
    assert_eq!(shell_unquote(&shell_quote(&key)).as_deref(), Some(key.as_str()));
    assert_eq!(ks_unquote(&ks_quote(&key)).as_deref(), Some(key.as_str()));
    let ctx = example_context(vec![key], hash.as_deref());
    let empty = std::env::temp_dir().join("xcat3-fuzz-no-templates");
    for file in ["kickstart", "preseed", "user-data", "meta-data"] {
        let _ = render(&empty, &ctx, file);
    }
});
