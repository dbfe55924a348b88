//! [`Secret`]: a string that never shows itself.
//!
//! Header values (`authorization: Bearer ...`) and whatever a config file
//! read through `${file:...}` are credentials. Wrapping them in `Secret`
//! makes every `Debug` and `Display` of a struct that holds one print
//! `<redacted>` instead, so a config or an output dumped into a log line or
//! an error cannot leak them; the value is only reachable through
//! [`Secret::expose`], at the one place that must send it.

use std::fmt;

/// A string whose `Debug` and `Display` print `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// What `Debug` and `Display` print instead of the value.
    pub const REDACTED: &'static str = "<redacted>";

    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the code that sends it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl PartialEq<str> for Secret {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Secret {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// `url` for a log line or an error: user, password and query (which may
/// carry an API key) replaced by `<redacted>`. Works on text that does not
/// parse as a URL too.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(Secret::REDACTED);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    match path.find('?') {
        Some(q) => {
            out.push_str(&path[..=q]);
            out.push_str(Secret::REDACTED);
        }
        None => out.push_str(path),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("Bearer hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(
            format!("{:?}", vec![("authorization", s.clone())])
                .matches("hunter2")
                .count(),
            0
        );
        assert_eq!(s.expose(), "Bearer hunter2");
        assert_eq!(s, "Bearer hunter2");
    }

    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(
            redact_url("https://h:4318/v1/logs"),
            "https://h:4318/v1/logs"
        );
        assert_eq!(
            redact_url("https://user:pw@h:4318/v1/logs"),
            "https://<redacted>@h:4318/v1/logs"
        );
        assert_eq!(
            redact_url("https://h/v1/logs?api_key=k3y"),
            "https://h/v1/logs?<redacted>"
        );
        assert_eq!(redact_url("user:pw@h?x"), "<redacted>@h?<redacted>");
        assert_eq!(redact_url("http://a@b@c/p"), "http://<redacted>@c/p");
    }
}
