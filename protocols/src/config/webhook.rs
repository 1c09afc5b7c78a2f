//! The `forward_http` route action: where a webhook is, how messages are
//! batched for it, and how much waits for it.
//!
//! ```text
//! [[route]]
//! name = "to-backend"
//! filter = "devices/+/up/#"
//! action = { kind = "forward_http", url = "http://127.0.0.1:9000/ingest",
//!            batch_max = 100, batch_wait = "20ms", queue_bytes = 1048576,
//!            queue_messages = 10000, connections = 2, timeout = "5s", max_retries = 3 }
//! ```
//!
//! Only plain `http://` is spoken: TLS is not supported (an `https://` URL
//! is refused; put a TLS-terminating proxy on the loopback in front of an
//! HTTPS endpoint). The data plane resolves no names, so the host is an IP
//! literal (`[::1]` for IPv6) or `localhost` (127.0.0.1).

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;

use serde::{Deserialize, Serialize};

/// Default [`WebhookConfig::batch_max`].
pub const WEBHOOK_DEFAULT_BATCH_MAX: u32 = 100;
/// Largest [`WebhookConfig::batch_max`].
pub const WEBHOOK_MAX_BATCH_MAX: u32 = 10_000;
/// Default [`WebhookConfig::batch_wait`].
pub const WEBHOOK_DEFAULT_BATCH_WAIT: Duration = Duration::from_millis(20);
/// Longest [`WebhookConfig::batch_wait`].
pub const WEBHOOK_MAX_BATCH_WAIT: Duration = Duration::from_secs(10);
/// Default [`WebhookConfig::queue_bytes`].
pub const WEBHOOK_DEFAULT_QUEUE_BYTES: u32 = 1024 * 1024;
/// Bounds of [`WebhookConfig::queue_bytes`].
pub const WEBHOOK_QUEUE_BYTES_RANGE: (u32, u32) = (1024, 1 << 30);
/// Default [`WebhookConfig::queue_messages`].
pub const WEBHOOK_DEFAULT_QUEUE_MESSAGES: u32 = 10_000;
/// Largest [`WebhookConfig::queue_messages`].
pub const WEBHOOK_MAX_QUEUE_MESSAGES: u32 = 1_000_000;
/// Default [`WebhookConfig::connections`].
pub const WEBHOOK_DEFAULT_CONNECTIONS: u16 = 2;
/// Largest [`WebhookConfig::connections`].
pub const WEBHOOK_MAX_CONNECTIONS: u16 = 64;
/// Default [`WebhookConfig::timeout`].
pub const WEBHOOK_DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest [`WebhookConfig::timeout`].
pub const WEBHOOK_MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Default [`WebhookConfig::max_retries`].
pub const WEBHOOK_DEFAULT_MAX_RETRIES: u32 = 3;
/// Largest [`WebhookConfig::max_retries`].
pub const WEBHOOK_MAX_RETRIES: u32 = 100;
/// Longest webhook URL.
pub const WEBHOOK_MAX_URL_BYTES: usize = 2048;

/// A webhook that matching messages are POSTed to, in JSON batches, per
/// core: `{"messages":[{"topic":…,"device":…,"listener":…,"payload":…,
/// "received_ms":…}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host[:port][/path]`; host an IP literal or `localhost`.
    pub url: String,
    /// Most messages in one POST (1..=10000, default 100).
    #[serde(default = "default_batch_max")]
    pub batch_max: u32,
    /// How long a batch waits for more messages after its first, before it
    /// is sent (0s..=10s, default 20ms). A batch that is full goes at once;
    /// one that waits for a free connection keeps filling meanwhile.
    #[serde(with = "humantime_serde", default = "default_batch_wait")]
    pub batch_wait: Duration,
    /// Bytes of encoded messages queued per core, the batches being sent
    /// included (1 KiB..=1 GiB, default 1 MiB); a message beyond it is
    /// dropped and counted.
    #[serde(default = "default_queue_bytes")]
    pub queue_bytes: u32,
    /// Messages queued per core, the batches being sent included
    /// (1..=1000000, default 10000); same policy.
    #[serde(default = "default_queue_messages")]
    pub queue_messages: u32,
    /// Keep-alive connections per core, each carrying one request at a time
    /// (1..=64, default 2). A device's messages always take the same one,
    /// so they arrive in order.
    #[serde(default = "default_connections")]
    pub connections: u16,
    /// Time one attempt has to connect, send and get its answer (more than
    /// 0s, at most 5m; default 5s).
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Attempts after the first for a batch that met a 5xx, 408 or 429
    /// answer, a timeout, or a refused or broken connection (0..=100,
    /// default 3), with a backoff from 100ms doubling to 5s, jittered.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
}

fn default_batch_max() -> u32 {
    WEBHOOK_DEFAULT_BATCH_MAX
}

fn default_batch_wait() -> Duration {
    WEBHOOK_DEFAULT_BATCH_WAIT
}

fn default_queue_bytes() -> u32 {
    WEBHOOK_DEFAULT_QUEUE_BYTES
}

fn default_queue_messages() -> u32 {
    WEBHOOK_DEFAULT_QUEUE_MESSAGES
}

fn default_connections() -> u16 {
    WEBHOOK_DEFAULT_CONNECTIONS
}

fn default_timeout() -> Duration {
    WEBHOOK_DEFAULT_TIMEOUT
}

fn default_max_retries() -> u32 {
    WEBHOOK_DEFAULT_MAX_RETRIES
}

impl WebhookConfig {
    /// A webhook at `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            batch_max: WEBHOOK_DEFAULT_BATCH_MAX,
            batch_wait: WEBHOOK_DEFAULT_BATCH_WAIT,
            queue_bytes: WEBHOOK_DEFAULT_QUEUE_BYTES,
            queue_messages: WEBHOOK_DEFAULT_QUEUE_MESSAGES,
            connections: WEBHOOK_DEFAULT_CONNECTIONS,
            timeout: WEBHOOK_DEFAULT_TIMEOUT,
            max_retries: WEBHOOK_DEFAULT_MAX_RETRIES,
        }
    }

    /// Where requests go ([`parse_webhook_url`] of `url`).
    pub fn target(&self) -> Result<WebhookUrl, String> {
        parse_webhook_url(&self.url)
    }

    /// Checks every setting; the error names the field and what would be
    /// accepted.
    pub fn validate(&self) -> Result<(), String> {
        self.target()?;
        if !(1..=WEBHOOK_MAX_BATCH_MAX).contains(&self.batch_max) {
            return Err(format!(
                "batch_max must be between 1 and {WEBHOOK_MAX_BATCH_MAX}, got {}",
                self.batch_max
            ));
        }
        for (name, value) in [("batch_wait", self.batch_wait), ("timeout", self.timeout)] {
            if value.subsec_nanos() % 1_000_000 != 0 {
                return Err(format!(
                    "{name} must be a whole number of milliseconds (it travels to data planes \
                     in milliseconds), got {}",
                    humantime_serde::re::humantime::format_duration(value)
                ));
            }
        }
        if self.batch_wait > WEBHOOK_MAX_BATCH_WAIT {
            return Err(format!(
                "batch_wait must be at most {}, got {}",
                humantime_serde::re::humantime::format_duration(WEBHOOK_MAX_BATCH_WAIT),
                humantime_serde::re::humantime::format_duration(self.batch_wait)
            ));
        }
        let (low, high) = WEBHOOK_QUEUE_BYTES_RANGE;
        if !(low..=high).contains(&self.queue_bytes) {
            return Err(format!(
                "queue_bytes must be between {low} and {high}, got {}",
                self.queue_bytes
            ));
        }
        if !(1..=WEBHOOK_MAX_QUEUE_MESSAGES).contains(&self.queue_messages) {
            return Err(format!(
                "queue_messages must be between 1 and {WEBHOOK_MAX_QUEUE_MESSAGES}, got {}",
                self.queue_messages
            ));
        }
        if !(1..=WEBHOOK_MAX_CONNECTIONS).contains(&self.connections) {
            return Err(format!(
                "connections must be between 1 and {WEBHOOK_MAX_CONNECTIONS}, got {}",
                self.connections
            ));
        }
        if self.timeout.is_zero() || self.timeout > WEBHOOK_MAX_TIMEOUT {
            return Err(format!(
                "timeout must be more than 0s and at most {}, got {}",
                humantime_serde::re::humantime::format_duration(WEBHOOK_MAX_TIMEOUT),
                humantime_serde::re::humantime::format_duration(self.timeout)
            ));
        }
        if self.max_retries > WEBHOOK_MAX_RETRIES {
            return Err(format!(
                "max_retries must be at most {WEBHOOK_MAX_RETRIES}, got {}",
                self.max_retries
            ));
        }
        Ok(())
    }
}

/// A parsed webhook URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header: the URL's host and port as written.
    pub authority: String,
    /// The request target: path and query (`/` when the URL has none).
    pub path: String,
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// Parses `http://host[:port][/path[?query]]`.
///
/// `host` is an IPv4 literal, an IPv6 literal in brackets, or `localhost`
/// (127.0.0.1): the data plane resolves no names. The port defaults to 80.
/// `https://` is refused (TLS is not supported), as are user info, a
/// fragment, and spaces or control characters anywhere.
pub fn parse_webhook_url(url: &str) -> Result<WebhookUrl, String> {
    if url.len() > WEBHOOK_MAX_URL_BYTES {
        return Err(format!(
            "url is {} bytes, more than {WEBHOOK_MAX_URL_BYTES}",
            url.len()
        ));
    }
    if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("url {url:?} contains {c:?}"));
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(format!(
            "url {url:?}: https is not supported (the data plane speaks plain HTTP/1.1 to \
             webhooks); use an http:// URL, e.g. a TLS-terminating proxy on the loopback"
        ));
    }
    let rest = match lower.strip_prefix("http://") {
        Some(_) => url.get(7..).unwrap_or_default(),
        None => {
            return Err(format!(
                "url {url:?} must start with http:// (e.g. http://127.0.0.1:9000/ingest)"
            ))
        }
    };
    if rest.contains('#') {
        return Err(format!("url {url:?} has a fragment ('#'); drop it"));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!(
            "url {url:?} carries user info ('@'), which is not supported"
        ));
    }
    let (host, port) = split_host_port(authority)
        .ok_or_else(|| format!("url {url:?}: {authority:?} is not host[:port]"))?;
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("url {url:?}: port {p:?} is not 1..=65535")),
        },
    };
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        IpAddr::V6(
            v6.parse()
                .map_err(|_| format!("url {url:?}: {host:?} is not an IPv6 address"))?,
        )
    } else {
        IpAddr::V4(host.parse().map_err(|_| {
            format!(
                "url {url:?}: host {host:?} is not an IP address or localhost \
                 (the data plane does not resolve names)"
            )
        })?)
    };
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    Ok(WebhookUrl {
        addr: SocketAddr::new(ip, port),
        authority: authority.to_owned(),
        path,
    })
}

/// `host` and the optional port of `host[:port]` (IPv6 in brackets).
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.is_empty() {
        return None;
    }
    if authority.starts_with('[') {
        let close = authority.find(']')?;
        let (host, tail) = authority.split_at(close + 1);
        return match tail {
            "" => Some((host, None)),
            t => Some((host, Some(t.strip_prefix(':')?))),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host, Some(port))),
        Some(_) => None,
        None => Some((authority, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults() {
        let u = parse_webhook_url("http://127.0.0.1:9000/ingest?x=1").unwrap();
        assert_eq!(u.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(u.authority, "127.0.0.1:9000");
        assert_eq!(u.path, "/ingest?x=1");
        assert_eq!(u.to_string(), "http://127.0.0.1:9000/ingest?x=1");
        let u = parse_webhook_url("HTTP://localhost").unwrap();
        assert_eq!(u.addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(u.path, "/");
        let u = parse_webhook_url("http://[::1]:8080?q").unwrap();
        assert_eq!(u.addr, "[::1]:8080".parse().unwrap());
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("[::1]:8080", "/?q")
        );
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("https://127.0.0.1/x", "https is not supported"),
            ("ftp://127.0.0.1/x", "must start with http://"),
            ("127.0.0.1:9000", "must start with http://"),
            ("http://example.com/x", "does not resolve names"),
            ("http://127.0.0.1:0/", "not 1..=65535"),
            ("http://127.0.0.1:99999/", "not 1..=65535"),
            ("http://127.0.0.1:x/", "not 1..=65535"),
            ("http://", "is not host[:port]"),
            ("http://:80/", "is not host[:port]"),
            ("http://[::1/", "is not host[:port]"),
            ("http://[nope]/", "not an IPv6 address"),
            ("http://u:p@127.0.0.1/", "user info"),
            ("http://127.0.0.1/a#b", "fragment"),
            ("http://127.0.0.1/a b", "contains ' '"),
            ("http://127.0.0.1/a\r\nX: y", "contains '\\r'"),
        ] {
            let e = parse_webhook_url(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
        let long = format!("http://127.0.0.1/{}", "a".repeat(WEBHOOK_MAX_URL_BYTES));
        assert!(parse_webhook_url(&long).unwrap_err().contains("bytes"));
    }

    #[test]
    fn settings_are_bounded() {
        let ok = WebhookConfig::new("http://127.0.0.1:9000/in");
        ok.validate().unwrap();
        type Change = fn(&mut WebhookConfig);
        let cases: [(Change, &str); 11] = [
            (|c| c.batch_max = 0, "batch_max"),
            (|c| c.batch_max = WEBHOOK_MAX_BATCH_MAX + 1, "batch_max"),
            (|c| c.batch_wait = Duration::from_secs(11), "batch_wait"),
            (|c| c.queue_bytes = 10, "queue_bytes"),
            (|c| c.queue_messages = 0, "queue_messages"),
            (|c| c.connections = 0, "connections"),
            (|c| c.connections = 65, "connections"),
            (|c| c.timeout = Duration::ZERO, "timeout"),
            (|c| c.max_retries = 101, "max_retries"),
            (|c| c.timeout = Duration::from_micros(500), "timeout"),
            (|c| c.batch_wait = Duration::from_micros(1500), "batch_wait"),
        ];
        for (change, field) in cases {
            let mut c = ok.clone();
            change(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.starts_with(field), "{field}: {e}");
        }
        let mut zero_wait = ok;
        zero_wait.batch_wait = Duration::ZERO;
        zero_wait.max_retries = 0;
        zero_wait.validate().unwrap();
    }
}
