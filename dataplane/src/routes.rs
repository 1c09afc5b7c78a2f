//! Routes: topic filter and origin → republish, forward or drop.
//!
//! A [`RouteTable`] is built on every core from the same config. Routes are
//! evaluated in config order for each message published on the core it
//! entered: every matching route acts; `drop` stops the message (no later
//! route, no subscriber).
//!
//! ```text
//! config routes ──build_on(core)──▶ RouteTable ──apply(&Message)──▶ RouteOutcome
//!                  │                  topic tree → routes in order   republish topics,
//!                  └ webhook senders of unchanged routes are          forwarders, deliver?
//!                    taken over from the running table
//! ```
//!
//! Forward routes own upstream tasks. A table lets go of them with
//! [`RouteTable::stop`] (when it is replaced, aborted or dropped); a
//! webhook sender that the next table took over keeps running.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use shoal_protocols::config::{
    parse_socket_addr, parse_topic_template, RouteAction, RouteConfig, TemplatePart, WebhookConfig,
};
use shoal_protocols::framing::Framer;
use shoal_protocols::topic::{validate_topic_name, TopicTree};

use crate::core::Core;
use crate::forward::{Forwarder, TcpUpstream, UdpUpstream, WebhookSender};
use crate::message::Message;
use crate::pool::SlabPool;
use crate::stats::WebhookStats;

enum CompiledAction {
    Republish(Vec<TemplatePart>),
    Forward(Rc<dyn Forwarder>),
    Webhook(Rc<WebhookSender>),
    Drop,
}

/// What forward routes are built with on one core.
pub(crate) struct Upstreams<'a> {
    /// Bounds upstream framing.
    pub(crate) largest_frame: u32,
    /// The core's pool (the TCP upstream compacts its queue into it).
    pub(crate) pool: &'a SlabPool,
    /// The core's webhook counters.
    pub(crate) webhook_stats: &'a Rc<WebhookStats>,
    /// The table running now, whose webhook senders unchanged routes keep.
    pub(crate) running: Option<&'a RouteTable>,
}

struct CompiledRoute {
    listener: Option<Rc<str>>,
    device: Option<Rc<str>>,
    action: CompiledAction,
}

/// The routes of one core.
pub(crate) struct RouteTable {
    routes: Vec<CompiledRoute>,
    by_filter: TopicTree<usize>,
    /// Reused list of the routes matching one message.
    matched: RefCell<Vec<usize>>,
    /// The table has let go of its upstreams.
    stopped: Cell<bool>,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.routes.len())
            .finish()
    }
}

/// What routes decided for one message.
pub(crate) struct RouteOutcome {
    /// Topics to publish copies on (or why one could not be made).
    pub(crate) republish: Vec<Result<Rc<str>, String>>,
    /// Upstreams to hand the payload to.
    pub(crate) forwards: Vec<Rc<dyn Forwarder>>,
    /// False when a `drop` route matched: no subscriber and no later route
    /// gets the message (the routes before it have acted).
    pub(crate) deliver: bool,
}

impl RouteTable {
    pub(crate) fn empty() -> Self {
        Self {
            routes: Vec::new(),
            by_filter: TopicTree::new(),
            matched: RefCell::new(Vec::new()),
            stopped: Cell::new(false),
        }
    }

    /// Compiles validated route configs for `core`: forward routes get
    /// this core's upstreams, webhook routes that did not change keep the
    /// running table's senders. `largest_frame` bounds upstream framing.
    pub(crate) fn build_on(
        core: &Core,
        configs: &[RouteConfig],
        largest_frame: u32,
    ) -> Result<Self, String> {
        let running = core.routes();
        Self::build(
            configs,
            &Upstreams {
                largest_frame,
                pool: &core.pool,
                webhook_stats: &core.stats.webhook,
                running: Some(&running),
            },
        )
    }

    /// Compiles validated route configs with `upstreams`.
    pub(crate) fn build(
        configs: &[RouteConfig],
        upstreams: &Upstreams<'_>,
    ) -> Result<Self, String> {
        let mut table = Self::empty();
        if let Err(e) = table.add_all(configs, upstreams) {
            // Upstreams already started for earlier routes must not linger.
            table.stop();
            return Err(e);
        }
        Ok(table)
    }

    /// The running sender of webhook route `name` with `config`, if any.
    fn webhook_serving(&self, name: &str, config: &WebhookConfig) -> Option<Rc<WebhookSender>> {
        self.routes.iter().find_map(|r| match &r.action {
            CompiledAction::Webhook(w) if w.serves(name, config) => Some(Rc::clone(w)),
            _ => None,
        })
    }

    fn add_all(
        &mut self,
        configs: &[RouteConfig],
        upstreams: &Upstreams<'_>,
    ) -> Result<(), String> {
        let table = self;
        let largest_frame = upstreams.largest_frame;
        let pool = upstreams.pool;
        for (i, r) in configs.iter().enumerate() {
            let action = match &r.action {
                RouteAction::Republish { topic } => {
                    CompiledAction::Republish(parse_topic_template(topic)?)
                }
                RouteAction::ForwardTcp {
                    address,
                    framing,
                    queue_bytes,
                } => {
                    let addr = parse_socket_addr(address)?;
                    let framer = Framer::new(framing, largest_frame).map_err(|e| e.to_string())?;
                    CompiledAction::Forward(TcpUpstream::start(
                        &r.name,
                        addr,
                        framer,
                        *queue_bytes as usize,
                        pool.clone(),
                    ))
                }
                RouteAction::ForwardUdp { address } => {
                    let addr = parse_socket_addr(address)?;
                    CompiledAction::Forward(Rc::new(UdpUpstream::new(&r.name, addr).map_err(
                        |e| format!("route {:?}: cannot open a udp socket: {e}", r.name),
                    )?))
                }
                RouteAction::ForwardHttp(webhook) => {
                    let running = upstreams
                        .running
                        .and_then(|t| t.webhook_serving(&r.name, webhook));
                    let sender = match running {
                        Some(sender) => {
                            sender.hold();
                            sender
                        }
                        None => WebhookSender::start(
                            &r.name,
                            webhook,
                            Rc::clone(upstreams.webhook_stats),
                        )
                        .map_err(|e| format!("route {:?}: {e}", r.name))?,
                    };
                    CompiledAction::Webhook(sender)
                }
                RouteAction::Drop => CompiledAction::Drop,
                #[allow(unreachable_patterns)]
                other => return Err(format!("route {:?}: unsupported action {other:?}", r.name)),
            };
            table.by_filter.insert(&r.filter, i);
            table.routes.push(CompiledRoute {
                listener: r.listener.as_deref().map(Into::into),
                device: r.device.as_deref().map(Into::into),
                action,
            });
        }
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Lets go of the upstreams of forward routes (the table is replaced,
    /// aborted or dropped): they stop unless another table holds them.
    /// Only the first call acts.
    pub(crate) fn stop(&self) {
        if self.stopped.replace(true) {
            return;
        }
        for r in &self.routes {
            match &r.action {
                CompiledAction::Forward(f) => f.stop(),
                CompiledAction::Webhook(w) => w.stop(),
                CompiledAction::Republish(_) | CompiledAction::Drop => {}
            }
        }
    }

    pub(crate) fn apply(&self, m: &Message, max_hops: u8) -> RouteOutcome {
        let mut republish = Vec::new();
        let mut forwards = Vec::new();
        if self.routes.is_empty() {
            return RouteOutcome {
                republish,
                forwards,
                deliver: true,
            };
        }
        let mut matched = self.matched.borrow_mut();
        matched.clear();
        self.by_filter
            .for_each_match(&m.topic, |i| matched.push(*i));
        matched.sort_unstable();
        for &i in matched.iter() {
            let Some(route) = self.routes.get(i) else {
                continue;
            };
            if route
                .listener
                .as_ref()
                .is_some_and(|l| m.origin.listener.as_ref() != Some(l))
                || route
                    .device
                    .as_ref()
                    .is_some_and(|d| m.origin.device.as_ref() != Some(d))
            {
                continue;
            }
            match &route.action {
                CompiledAction::Drop => {
                    return RouteOutcome {
                        republish,
                        forwards,
                        deliver: false,
                    }
                }
                CompiledAction::Republish(template) => {
                    if m.hops >= max_hops {
                        republish.push(Err(format!(
                            "message already republished {} times (max_route_hops)",
                            m.hops
                        )));
                    } else {
                        republish.push(render(template, m));
                    }
                }
                CompiledAction::Forward(f) => forwards.push(Rc::clone(f)),
                CompiledAction::Webhook(w) => forwards.push(Rc::clone(w) as Rc<dyn Forwarder>),
            }
        }
        RouteOutcome {
            republish,
            forwards,
            deliver: true,
        }
    }
}

impl Drop for RouteTable {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fills a topic template from a message.
fn render(template: &[TemplatePart], m: &Message) -> Result<Rc<str>, String> {
    let mut out = String::with_capacity(m.topic.len() + 16);
    for part in template {
        match part {
            TemplatePart::Literal(s) => out.push_str(s),
            TemplatePart::Device => out.push_str(
                m.origin
                    .device
                    .as_deref()
                    .ok_or("the template needs {device} but the message has no device")?,
            ),
            TemplatePart::Listener => out.push_str(
                m.origin
                    .listener
                    .as_deref()
                    .ok_or("the template needs {listener} but the message has none")?,
            ),
            TemplatePart::Topic => out.push_str(&m.topic),
            TemplatePart::Level(n) => out.push_str(
                m.topic
                    .split('/')
                    .nth(usize::from(*n) - 1)
                    .ok_or_else(|| format!("topic {:?} has no level {n}", m.topic))?,
            ),
        }
    }
    validate_topic_name(&out).map_err(|e| format!("republish topic {out:?} is invalid: {e}"))?;
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Origin;
    use crate::pool::Payload;
    use shoal_protocols::config::PoolSettings;

    fn msg(topic: &str, device: Option<&str>, hops: u8) -> Message {
        let pool = SlabPool::new(&PoolSettings::default());
        let b = pool.try_acquire(1).unwrap();
        Message {
            topic: topic.into(),
            payload: Payload::whole(b),
            qos: 0,
            retain: false,
            origin: Origin {
                listener: Some("tcp".into()),
                device: device.map(Into::into),
                session: 0,
            },
            hops,
            props: None,
        }
    }

    fn upstreams<'a>(pool: &'a SlabPool, stats: &'a Rc<WebhookStats>) -> Upstreams<'a> {
        Upstreams {
            largest_frame: 4096,
            pool,
            webhook_stats: stats,
            running: None,
        }
    }

    fn webhooks(t: &RouteTable) -> Vec<Rc<WebhookSender>> {
        t.routes
            .iter()
            .filter_map(|r| match &r.action {
                CompiledAction::Webhook(w) => Some(Rc::clone(w)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn unchanged_webhook_routes_keep_their_sender_across_tables() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let pool = SlabPool::new(&PoolSettings::default());
            let stats = Rc::default();
            let hook = |url: &str| {
                route(
                    "hook",
                    "devices/#",
                    None,
                    RouteAction::ForwardHttp(WebhookConfig::new(url)),
                )
            };
            // Port 9: nothing listens; nothing is queued, so nothing is sent.
            let first =
                RouteTable::build(&[hook("http://127.0.0.1:9/a")], &upstreams(&pool, &stats))
                    .unwrap();
            let mut with_running = upstreams(&pool, &stats);
            with_running.running = Some(&first);
            let second = RouteTable::build(&[hook("http://127.0.0.1:9/a")], &with_running).unwrap();
            let (a, b) = (webhooks(&first), webhooks(&second));
            assert!(
                Rc::ptr_eq(&a[0], &b[0]),
                "the unchanged route kept its sender"
            );
            // The old table lets go (commit): the sender runs on for the new one.
            first.stop();
            first.stop();
            assert!(b[0].serves("hook", &WebhookConfig::new("http://127.0.0.1:9/a")));
            // A changed route gets a new sender; the old one stops with its table.
            let mut with_second = upstreams(&pool, &stats);
            with_second.running = Some(&second);
            let third = RouteTable::build(&[hook("http://127.0.0.1:9/b")], &with_second).unwrap();
            assert!(!Rc::ptr_eq(&b[0], &webhooks(&third)[0]));
            drop(second);
            assert!(!b[0].serves("hook", &WebhookConfig::new("http://127.0.0.1:9/a")));
            third.stop();
            assert!(
                !webhooks(&third)[0].serves("hook", &WebhookConfig::new("http://127.0.0.1:9/b"))
            );
        });
    }

    fn route(name: &str, filter: &str, device: Option<&str>, action: RouteAction) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            filter: filter.into(),
            listener: None,
            device: device.map(Into::into),
            action,
        }
    }

    fn topics(o: RouteOutcome) -> Vec<Result<String, String>> {
        let mut topics: Vec<Result<String, String>> = o
            .republish
            .into_iter()
            .map(|r| r.map(|t| t.to_string()))
            .collect();
        if !o.deliver {
            topics.push(Err("dropped".into()));
        }
        topics
    }

    #[test]
    fn republish_templates_and_order() {
        let t = RouteTable::build(
            &[
                route(
                    "pair",
                    "devices/+/up",
                    None,
                    RouteAction::Republish {
                        topic: "devices/{device}-rx/down".into(),
                    },
                ),
                route(
                    "levels",
                    "devices/#",
                    Some("a"),
                    RouteAction::Republish {
                        topic: "copy/{2}/{listener}/{topic}".into(),
                    },
                ),
            ],
            &upstreams(&SlabPool::new(&PoolSettings::default()), &Rc::default()),
        )
        .unwrap();
        assert_eq!(
            topics(t.apply(&msg("devices/a/up", Some("a"), 0), 4)),
            vec![
                Ok("devices/a-rx/down".to_string()),
                Ok("copy/a/tcp/devices/a/up".to_string())
            ]
        );
        // The device filter excludes the second route for device b.
        assert_eq!(
            topics(t.apply(&msg("devices/b/up", Some("b"), 0), 4)),
            vec![Ok("devices/b-rx/down".to_string())]
        );
        // Loop guard.
        assert!(topics(t.apply(&msg("devices/b/up", Some("b"), 4), 4))[0].is_err());
        // No device: the template cannot be filled.
        assert!(topics(t.apply(&msg("devices/b/up", None, 0), 4))[0].is_err());
    }

    #[test]
    fn a_drop_route_keeps_what_earlier_routes_did() {
        let t = RouteTable::build(
            &[
                route(
                    "copy",
                    "devices/+/up",
                    None,
                    RouteAction::Republish {
                        topic: "audit/{device}".into(),
                    },
                ),
                route("d", "devices/x/up", None, RouteAction::Drop),
            ],
            &upstreams(&SlabPool::new(&PoolSettings::default()), &Rc::default()),
        )
        .unwrap();
        assert_eq!(
            topics(t.apply(&msg("devices/x/up", Some("x"), 0), 4)),
            vec![Ok("audit/x".to_string()), Err("dropped".to_string())]
        );
    }

    #[test]
    fn drop_stops_everything() {
        let t = RouteTable::build(
            &[
                route("d", "devices/x/up", None, RouteAction::Drop),
                route(
                    "r",
                    "devices/+/up",
                    None,
                    RouteAction::Republish { topic: "y".into() },
                ),
            ],
            &upstreams(&SlabPool::new(&PoolSettings::default()), &Rc::default()),
        )
        .unwrap();
        assert!(!t.apply(&msg("devices/x/up", None, 0), 4).deliver);
        assert_eq!(
            topics(t.apply(&msg("devices/z/up", None, 0), 4)),
            vec![Ok("y".to_string())]
        );
    }
}
