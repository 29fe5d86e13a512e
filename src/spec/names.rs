//! Kubernetes name rules (RFC 1123 labels and subdomains, qualified names, label values).

/// Checks an RFC 1123 label (what Kubernetes requires of namespaces, Service names and label-like
/// names): at most 63 lower-case alphanumerics or `-`, starting and ending alphanumeric.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty (an RFC 1123 name such as `data`)".to_string());
    }
    if name.len() > 63 {
        return Err(format!(
            "`{name}` is {} characters; an RFC 1123 label has at most 63",
            name.len()
        ));
    }
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if !valid_chars || !ends_ok {
        return Err(format!(
            "invalid name `{name}`: use lower-case letters, digits and `-`, starting and ending with a letter or digit (RFC 1123)"
        ));
    }
    Ok(())
}

/// Characters a spec string may not hold: DEL, the C1 controls (U+0080..U+009F) and the
/// non-characters U+FFFE and U+FFFF. The YAML snaproll writes escapes them, but go-yaml's
/// emitter writes them back raw and its reader then refuses them, so `kubectl kustomize`
/// (and so Argo CD and Flux) fails on the whole folder; NEL (U+0085) it passes on raw, and
/// YAML 1.1 readers turn it into a line break. Refused in validation, with the field.
pub fn unportable(c: char) -> bool {
    matches!(c, '\u{7f}'..='\u{9f}' | '\u{fffe}' | '\u{ffff}')
}

/// A value for a message: control and other invisible characters escaped, long values cut.
pub(super) fn shown(value: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = value
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// The name part of a qualified name, and a label value: at most 63 letters, digits, `-`, `_`
/// and `.`, starting and ending with a letter or digit (Kubernetes' `qualifiedNameFmt`).
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Checks a label, annotation, node-selector or toleration key as the API server does
/// (`IsQualifiedName`): an optional DNS subdomain prefix (at most 253 characters) and `/`,
/// then a name of at most 63 letters, digits, `-`, `_` and `.`, starting and ending with a
/// letter or digit.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && check_dns_subdomain(p).is_err()
    {
        return Err(format!(
            "`{}`: the prefix before `/` must be a DNS subdomain of at most 253 characters (lower-case letters, digits, `-` and `.`), e.g. `kubernetes.io/os`",
            shown(key)
        ));
    }
    if !is_label_name(name) {
        return Err(format!(
            "`{}` is not a qualified name: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit, after an optional DNS subdomain prefix and `/` (e.g. `kubernetes.io/os`)",
            shown(key)
        ));
    }
    Ok(())
}

/// Checks a label value as the API server does (`IsValidLabelValue`): empty, or at most 63
/// letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a valid label value: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit (or empty)",
        shown(value)
    ))
}

/// Checks an RFC 1123 subdomain as Kubernetes does (`IsDNS1123Subdomain`): dot-separated parts of
/// lower-case alphanumerics and `-`, each starting and ending alphanumeric, at most 253 characters
/// in all. Unlike DNS, Kubernetes puts no 63-character limit on the parts.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        let head: String = name.chars().take(20).collect();
        return Err(format!(
            "`{head}…` is {} characters; an RFC 1123 subdomain has at most 253",
            name.len()
        ));
    }
    if !subdomain_chars(name.as_bytes()) {
        return Err(format!(
            "invalid name `{name}`: use lower-case letters, digits, `-` and `.`, each part starting and ending with a letter or digit (RFC 1123 subdomain)"
        ));
    }
    Ok(())
}

/// Non-empty `.`-separated parts of lower-case letters, digits and `-`, each starting and
/// ending with a letter or digit; one pass over the bytes (every rendered object's name and
/// label keys come here, so splitting the name into parts was a percent of a large render).
fn subdomain_chars(name: &[u8]) -> bool {
    // The byte before the current one, `.` at the start of each part.
    let mut prev = b'.';
    for &b in name {
        let ok = match b {
            b'a'..=b'z' | b'0'..=b'9' => true,
            b'-' => prev != b'.',
            b'.' => prev != b'.' && prev != b'-',
            _ => false,
        };
        if !ok {
            return false;
        }
        prev = b;
    }
    prev != b'.' && prev != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass check agrees with the rule read part by part, on every string of up to
    /// five characters over letters, digits, `-`, `.` and two that are never allowed.
    #[test]
    fn subdomain_check_is_the_part_by_part_rule() {
        let by_parts = |name: &str| {
            !name.is_empty()
                && name.split('.').all(|p| {
                    p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        && p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                        && p.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
                })
        };
        let alphabet = ['a', '0', '-', '.', 'A', '_'];
        let mut names = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = names
                .iter()
                .filter(|n| n.len() == names.last().map_or(0, String::len))
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.extend(longer);
        }
        for name in &names {
            assert_eq!(subdomain_chars(name.as_bytes()), by_parts(name), "{name:?}");
        }
    }

    #[test]
    fn dns_labels() {
        assert!(check_dns_label("data-1").is_ok());
        assert!(check_dns_label("Data").is_err());
        assert!(check_dns_label("-a").is_err());
        assert!(check_dns_label("../x").is_err());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn qualified_names_and_label_values_follow_the_api_server() {
        for ok in [
            "a",
            "kubernetes.io/os",
            "node.kubernetes.io/instance-type",
            "A_b.c-9",
            &"a".repeat(63),
            &format!("{}/x", "a".repeat(253)),
        ] {
            assert!(check_qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a\"b",
            "{{ 7*7 }}",
            "-a",
            "a-",
            "/a",
            "a/",
            "a/b/c",
            "Example.com/a",
            "a b",
            "a\u{85}",
            &"a".repeat(64),
            &format!("{}/x", "a".repeat(254)),
            &"k".repeat(100_000),
        ] {
            assert!(check_qualified_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("n1-standard_4.x").is_ok());
        for bad in ["a b", "-a", "a/b", "\u{2028}", &"v".repeat(64)] {
            assert!(check_label_value(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_qualified_name(&"k".repeat(100_000)).unwrap_err(),
            format!(
                "`{}…` is not a qualified name: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit, after an optional DNS subdomain prefix and `/` (e.g. `kubernetes.io/os`)",
                "k".repeat(40)
            )
        );
    }

    #[test]
    fn dns_subdomains_have_no_per_part_limit() {
        assert!(check_dns_subdomain("pd.csi.storage.gke.io").is_ok());
        assert!(check_dns_subdomain(&"a".repeat(70)).is_ok());
        assert!(check_dns_subdomain(&"a".repeat(254)).is_err());
        assert!(check_dns_subdomain("a..b").is_err());
        assert!(check_dns_subdomain("a.-b").is_err());
        assert!(check_dns_subdomain("").is_err());
    }

    #[test]
    fn over_long_names_with_multibyte_characters_do_not_panic() {
        let name = format!("a{}", "é".repeat(200));
        let err = check_dns_subdomain(&name).unwrap_err();
        assert!(
            err.starts_with("`aééééééééééééééééééé…` is 401 characters"),
            "{err}"
        );
    }
}
