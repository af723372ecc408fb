//! Which servers can load which snapshot format (PROTOCOL §6.1, §7.9). The relay passes the
//! master's snapshot through unchanged, so a replica older than the format, or of the other
//! family for formats only one family reads, cannot sync from it: it drops the connection after
//! the snapshot and retries forever. This names the format's requirement for the operator.

/// `Redis server v=7.2.4 sha=...` or `Valkey server v=8.1.8 ...` (what `<server> --version`
/// prints): the family and the version.
pub fn server_version(text: &str) -> Option<(String, String)> {
    let mut words = text.split_whitespace();
    let family = words.next()?.to_string();
    let version = words.find_map(|w| w.strip_prefix("v="))?.to_string();
    Some((family, version))
}

/// What a snapshot's signature needs of the server loading it.
pub fn requirement(signature: &str) -> &'static str {
    match signature {
        "REDIS0009" => "Redis 5.0 or Valkey 7.2 and newer",
        "REDIS0010" => "Redis 7.0 or Valkey 7.2 and newer",
        "REDIS0011" => "Redis 7.2 or Valkey 7.2 and newer",
        "REDIS0012" => "Redis 7.4 and newer (Valkey cannot load it)",
        "REDIS0013" => "Redis 8.6 and newer (Valkey cannot load it)",
        "VALKEY080" => "Valkey 9.0 and newer (Redis cannot load it)",
        "VALKEY081" => "Valkey 9.2 and newer (Redis cannot load it)",
        _ => "a server at least as new as the master",
    }
}

/// Whether a Valkey replica that announced `version` (`REPLCONF version`) loads `signature`
/// with its default `rdb-version-check strict`.
pub fn valkey_loads(signature: &str, version: &str) -> bool {
    let v: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    let at_least = |major: u32, minor: u32| {
        (v.first().copied(), v.get(1).copied()) >= (Some(major), Some(minor))
    };
    match signature
        .strip_prefix("REDIS")
        .and_then(|d| d.parse::<u32>().ok())
    {
        Some(rdb) => rdb <= 11,
        None => match signature {
            "VALKEY080" => at_least(9, 0),
            "VALKEY081" => at_least(9, 2),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_name_the_family() {
        assert_eq!(
            server_version("Redis server v=7.2.4 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64"),
            Some(("Redis".into(), "7.2.4".into()))
        );
        assert_eq!(
            server_version("Valkey server v=8.1.8 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64"),
            Some(("Valkey".into(), "8.1.8".into()))
        );
        assert_eq!(server_version("nonsense"), None);
    }

    #[test]
    fn valkey_versions_and_formats() {
        assert!(valkey_loads("REDIS0011", "8.1.8"));
        assert!(!valkey_loads("REDIS0012", "9.1.2"));
        assert!(valkey_loads("VALKEY080", "9.1.2"));
        assert!(!valkey_loads("VALKEY080", "8.1.8"));
        assert!(!valkey_loads("VALKEY081", "9.1.2"));
        assert!(requirement("REDIS0012").contains("7.4"));
    }
}
