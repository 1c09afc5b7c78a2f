//! Data-plane configs for the tests, built from listeners and routes and
//! rendered as TOML, so a test states only what its scenario needs.
//!
//! ```text
//! Config::tcp()                      // listener "tcp" on @port0@
//!     .outbound_queue_bytes(65536)   // [runtime]
//!     .route(Route::echo())          // devices/X/up -> devices/X/down
//! ```
//!
//! Ports are written as `@portN@` placeholders, which
//! [`Dataplane::start`](crate::Dataplane::start) replaces by free ports.

use std::fmt;

/// A whole data-plane config: `[runtime]`, `[pools]`, listeners, routes.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `key = value` lines of `[runtime]`, values in TOML.
    runtime: Vec<(String, String)>,
    /// The body of `[pools]`, if any.
    pools: Option<String>,
    listeners: Vec<Listener>,
    routes: Vec<Route>,
    /// TOML written as it is after everything else (`[runtime.mqtt]`,
    /// `[[product]]`).
    raw: Vec<String>,
}

impl Config {
    /// No listener and no route yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The suite's usual device listener and nothing else:
    /// [`Listener::tcp`]`("tcp", 0)`.
    pub fn tcp() -> Self {
        Self::new().listener(Listener::tcp("tcp", 0))
    }

    fn runtime(mut self, key: &str, value: String) -> Self {
        self.runtime.push((key.to_owned(), value));
        self
    }

    /// `[runtime] drain_timeout`, e.g. `"10s"`.
    pub fn drain_timeout(self, duration: &str) -> Self {
        self.runtime("drain_timeout", quoted(duration))
    }

    /// `[runtime] outbound_queue_bytes`.
    pub fn outbound_queue_bytes(self, bytes: u64) -> Self {
        self.runtime("outbound_queue_bytes", bytes.to_string())
    }

    /// `[runtime] write_stall_timeout`, e.g. `"500ms"`.
    pub fn write_stall_timeout(self, duration: &str) -> Self {
        self.runtime("write_stall_timeout", quoted(duration))
    }

    /// `[runtime] max_route_hops`.
    pub fn max_route_hops(self, hops: u32) -> Self {
        self.runtime("max_route_hops", hops.to_string())
    }

    /// The body of `[pools]`, as TOML.
    pub fn pools(mut self, body: &str) -> Self {
        self.pools = Some(body.trim().to_owned());
        self
    }

    /// Adds a listener after the ones already there.
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Adds a route after the ones already there.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Appends TOML as it is, after the routes: tables the builder has no
    /// method for, e.g. `[runtime.mqtt]` or `[[product]]`.
    pub fn raw_toml(mut self, toml: &str) -> Self {
        self.raw.push(toml.trim().to_owned());
        self
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.runtime.is_empty() {
            writeln!(f, "[runtime]")?;
            for (key, value) in &self.runtime {
                writeln!(f, "{key} = {value}")?;
            }
            writeln!(f)?;
        }
        if let Some(body) = &self.pools {
            writeln!(f, "[pools]\n{body}\n")?;
        }
        for listener in &self.listeners {
            writeln!(f, "{listener}")?;
        }
        for route in &self.routes {
            writeln!(f, "{route}")?;
        }
        for toml in &self.raw {
            writeln!(f, "{toml}\n")?;
        }
        Ok(())
    }
}

/// One `[[listener]]` table.
#[derive(Debug, Clone)]
pub struct Listener {
    /// `key = value` lines, values in TOML, in the order they print.
    fields: Vec<(&'static str, String)>,
}

impl Listener {
    fn new(name: &str, protocol: &str, port: usize) -> Self {
        Self {
            fields: vec![
                ("name", quoted(name)),
                ("protocol", quoted(protocol)),
                ("bind", quoted(&format!("127.0.0.1:@port{port}@"))),
                // The suite's listeners take devices as given unless a test
                // asks for secrets (the config's own default is
                // device_secret).
                ("auth", quoted("none")),
            ],
        }
    }

    /// TCP on `127.0.0.1:@port{port}@`: 2-byte big-endian length frames,
    /// the first of which is the device id.
    pub fn tcp(name: &str, port: usize) -> Self {
        Self::new(name, "tcp", port)
            .framing(r#"{ kind = "length_field", width = 2 }"#)
            .identity(r#"{ kind = "login_frame" }"#)
    }

    /// UDP on `127.0.0.1:@port{port}@`: each datagram one message, each
    /// peer address one device.
    pub fn udp(name: &str, port: usize) -> Self {
        Self::new(name, "udp", port).identity(r#"{ kind = "peer_address" }"#)
    }

    /// CoAP over UDP on `127.0.0.1:@port{port}@`: `POST
    /// /devices/{id}/up[/…]` publishes, `GET /devices/{id}/down` (with
    /// Observe) follows the downlink.
    pub fn coap(name: &str, port: usize) -> Self {
        Self::new(name, "coap", port)
    }

    /// MQTT 3.1.1 and 5.0 on `127.0.0.1:@port{port}@`.
    pub fn mqtt(name: &str, port: usize) -> Self {
        Self::new(name, "mqtt", port)
    }

    /// RTMP on `127.0.0.1:@port{port}@`: live streams published and
    /// played (`rtmp://127.0.0.1:PORT/{app}/{name}`).
    pub fn rtmp(name: &str, port: usize) -> Self {
        Self::new(name, "rtmp", port)
    }

    /// HTTP on `127.0.0.1:@port{port}@`: MQTT over WebSocket at `/mqtt`.
    pub fn http(name: &str, port: usize) -> Self {
        Self::new(name, "http", port)
    }

    /// Sets `key` to the TOML `value`, in place if it is set already.
    fn set(mut self, key: &'static str, value: String) -> Self {
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(field) => field.1 = value,
            None => self.fields.push((key, value)),
        }
        self
    }

    /// `bind`: `addr` instead of the free port the test would get.
    pub fn bind(self, addr: &str) -> Self {
        self.set("bind", quoted(addr))
    }

    /// `max_connections`.
    pub fn max_connections(self, connections: u32) -> Self {
        self.set("max_connections", connections.to_string())
    }

    /// `max_frame_bytes`.
    pub fn max_frame_bytes(self, bytes: u32) -> Self {
        self.set("max_frame_bytes", bytes.to_string())
    }

    /// `idle_timeout`, e.g. `"5m"`.
    pub fn idle_timeout(self, duration: &str) -> Self {
        self.set("idle_timeout", quoted(duration))
    }

    /// `framing`, an inline TOML table.
    pub fn framing(self, table: &str) -> Self {
        self.set("framing", table.to_owned())
    }

    /// `identity`, an inline TOML table.
    pub fn identity(self, table: &str) -> Self {
        self.set("identity", table.to_owned())
    }

    /// `auth`: `"none"` or `"device_secret"`.
    pub fn auth(self, auth: &str) -> Self {
        self.set("auth", quoted(auth))
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[[listener]]")?;
        for (key, value) in &self.fields {
            writeln!(f, "{key} = {value}")?;
        }
        Ok(())
    }
}

/// One `[[route]]` table.
#[derive(Debug, Clone)]
pub struct Route {
    name: String,
    filter: String,
    listener: Option<String>,
    device: Option<String>,
    /// An inline TOML table.
    action: String,
}

impl Route {
    /// Messages matching `filter` take `action`, an inline TOML table.
    pub fn new(name: &str, filter: &str, action: &str) -> Self {
        Self {
            name: name.to_owned(),
            filter: filter.to_owned(),
            listener: None,
            device: None,
            action: action.to_owned(),
        }
    }

    /// Messages matching `filter` are published again on `topic`.
    pub fn republish(name: &str, filter: &str, topic: &str) -> Self {
        Self::new(
            name,
            filter,
            &format!(r#"{{ kind = "republish", topic = {} }}"#, quoted(topic)),
        )
    }

    /// Messages matching `filter` are POSTed to the webhook at `url`;
    /// `options` are more `key = value` pairs of the action table (e.g.
    /// `batch_wait = "5ms", max_retries = 2`), or empty.
    pub fn forward_http(name: &str, filter: &str, url: &str, options: &str) -> Self {
        let more = if options.is_empty() {
            String::new()
        } else {
            format!(", {options}")
        };
        Self::new(
            name,
            filter,
            &format!(
                r#"{{ kind = "forward_http", url = {}{more} }}"#,
                quoted(url)
            ),
        )
    }

    /// Messages matching `filter` go nowhere.
    pub fn dropping(name: &str, filter: &str) -> Self {
        Self::new(name, filter, r#"{ kind = "drop" }"#)
    }

    /// `echo`: every device's uplink comes back to it as downlink.
    pub fn echo() -> Self {
        Self::republish("echo", "devices/+/up", "devices/{device}/down")
    }

    /// `pair`: every device's uplink goes to the device of the same name
    /// with `-rx` appended (see [`connect_pairs`](crate::connect_pairs)).
    pub fn pair() -> Self {
        Self::republish("pair", "devices/+/up", "devices/{device}-rx/down")
    }

    /// Only messages of devices on `listener` match.
    pub fn listener(mut self, listener: &str) -> Self {
        self.listener = Some(listener.to_owned());
        self
    }

    /// Only messages of `device` match.
    pub fn device(mut self, device: &str) -> Self {
        self.device = Some(device.to_owned());
        self
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[[route]]")?;
        writeln!(f, "name = {}", quoted(&self.name))?;
        writeln!(f, "filter = {}", quoted(&self.filter))?;
        if let Some(listener) = &self.listener {
            writeln!(f, "listener = {}", quoted(listener))?;
        }
        if let Some(device) = &self.device {
            writeln!(f, "device = {}", quoted(device))?;
        }
        writeln!(f, "action = {}", self.action)
    }
}

/// `text` as a TOML basic string.
fn quoted(text: &str) -> String {
    format!("{text:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_runtime_listeners_and_routes_in_order() {
        let config = Config::tcp()
            .drain_timeout("1s")
            .listener(Listener::udp("udp", 1).idle_timeout("5m"))
            .route(Route::dropping("mute", "devices/+/up").device("noisy"))
            .route(Route::echo().listener("tcp"));
        let expected = r#"[runtime]
drain_timeout = "1s"

[[listener]]
name = "tcp"
protocol = "tcp"
bind = "127.0.0.1:@port0@"
auth = "none"
framing = { kind = "length_field", width = 2 }
identity = { kind = "login_frame" }

[[listener]]
name = "udp"
protocol = "udp"
bind = "127.0.0.1:@port1@"
auth = "none"
identity = { kind = "peer_address" }
idle_timeout = "5m"

[[route]]
name = "mute"
filter = "devices/+/up"
device = "noisy"
action = { kind = "drop" }

[[route]]
name = "echo"
filter = "devices/+/up"
listener = "tcp"
action = { kind = "republish", topic = "devices/{device}/down" }

"#;
        assert_eq!(config.to_string(), expected);
    }

    #[test]
    fn a_field_set_twice_keeps_its_place_and_the_last_value() {
        let listener = Listener::tcp("lines", 1)
            .framing(r#"{ kind = "delimiter", delimiter = "\n" }"#)
            .max_frame_bytes(64);
        let expected = r#"[[listener]]
name = "lines"
protocol = "tcp"
bind = "127.0.0.1:@port1@"
auth = "none"
framing = { kind = "delimiter", delimiter = "\n" }
identity = { kind = "login_frame" }
max_frame_bytes = 64
"#;
        assert_eq!(listener.to_string(), expected);
    }

    #[test]
    fn mqtt_and_http_listeners_and_raw_tables_last() {
        let config = Config::new()
            .listener(Listener::mqtt("mqtt", 0).auth("device_secret"))
            .listener(Listener::http("http", 1))
            .raw_toml("[runtime.mqtt]\nmax_inflight = 8\n");
        let expected = r#"[[listener]]
name = "mqtt"
protocol = "mqtt"
bind = "127.0.0.1:@port0@"
auth = "device_secret"

[[listener]]
name = "http"
protocol = "http"
bind = "127.0.0.1:@port1@"
auth = "none"

[runtime.mqtt]
max_inflight = 8

"#;
        assert_eq!(config.to_string(), expected);
    }
}
