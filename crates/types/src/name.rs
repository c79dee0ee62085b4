use crate::FieldError;

/// Checks that `name` is a valid hostname (RFC 1123): dot-separated labels of letters, digits and
/// hyphens, each 1–63 characters, not starting or ending with a hyphen, 253 characters at most.
pub fn validate_hostname(name: &str) -> Result<(), FieldError> {
    let bad =
        |why: &str| FieldError::invalid("name", format!("{name:?} is not a valid hostname: {why}"));
    if name.is_empty() {
        return Err(FieldError::invalid("name", "must not be empty"));
    }
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(bad(&format!(
                "{c:?} is not allowed (letters, digits, '-' and '.' only)"
            )));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label starts or ends with '-'"));
        }
    }
    if name == "all" {
        return Err(bad("\"all\" is reserved for every node"));
    }
    Ok(())
}

/// Checks a group name: like a hostname label, so a group can stand in a noderange.
pub fn validate_group_name(group: &str) -> Result<(), FieldError> {
    let ok = !group.is_empty()
        && group.len() <= 63
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !group.starts_with('-')
        && group != "all";
    if ok {
        Ok(())
    } else {
        Err(FieldError::invalid(
            "groups",
            format!(
                "{group:?} is not a valid group name (1-63 letters, digits, '-' or '_', not starting with '-', not \"all\")"
            ),
        ))
    }
}

/// Checks a label key: `[A-Za-z0-9._/-]`, 1–63 characters.
pub fn validate_label_key(key: &str) -> Result<(), FieldError> {
    let ok = !key.is_empty()
        && key.len() <= 63
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::invalid(
            format!("labels.{key}"),
            "label keys are 1-63 letters, digits, '.', '_' or '-'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["node01", "xcat3test1", "cn-1.rack2", "a", "R1N1"] {
            validate_hostname(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let long_label = "a".repeat(64);
        let long_name = ["abc"; 70].join(".");
        for bad in [
            "",
            "-node",
            "node-",
            "no de",
            "node_1",
            "node/1",
            "a..b",
            ".a",
            "all",
            "nöde",
            &long_label,
            &long_name,
        ] {
            let e = validate_hostname(bad).expect_err(bad);
            assert_eq!(e.field, "name");
        }
    }

    #[test]
    fn groups_and_labels() {
        validate_group_name("compute").unwrap();
        validate_group_name("rack_1").unwrap();
        for bad in ["", "all", "-x", "a,b", "a b"] {
            validate_group_name(bad).expect_err(bad);
        }
        validate_label_key("rack.position").unwrap();
        validate_label_key("a b").unwrap_err();
    }
}
