//! Byte quantities as kubectl writes them: `512Mi`, `1Gi`, `64Ki`, `500M`, `1048576`.

/// Parse `512Mi`-style text into bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use bytes, Ki, Mi, Gi)"
            ))
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a quantity"))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// A YAML value that is either a number of bytes or quantity text.
pub fn parse_bytes_value(v: &serde_yaml::Value) -> Result<u64, String> {
    match v {
        serde_yaml::Value::Number(n) => n
            .as_u64()
            .filter(|b| *b > 0)
            .ok_or_else(|| format!("{n} is not a positive number of bytes")),
        serde_yaml::Value::String(s) => parse_bytes(s),
        other => Err(format!(
            "expected bytes or a quantity like 512Mi, got {other:?}"
        )),
    }
}

/// Bytes → the shortest exact binary-suffixed form (`536870912` → `512Mi`).
pub fn format_bytes(bytes: u64) -> String {
    for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("12Q").is_err());
        assert!(parse_bytes("Mi").is_err());
        assert!(parse_bytes("0").is_err());
        assert_eq!(format_bytes(512 << 20), "512Mi");
        assert_eq!(format_bytes(1000), "1000");
    }
}
