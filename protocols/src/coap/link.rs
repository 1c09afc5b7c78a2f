//! `/.well-known/core` in the CoRE Link Format (RFC 6690), kept simple: a
//! list of links with the common attributes, and the query filter of
//! RFC 6690 §4.1 on them.

use super::message::QueryItem;

/// One link of a `/.well-known/core` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Link<'a> {
    /// The target, e.g. `/devices/{id}/up`.
    pub target: &'a str,
    /// Resource type (`rt`).
    pub rt: Option<&'a str>,
    /// Interface description (`if`).
    pub interface: Option<&'a str>,
    /// Content-Format (`ct`).
    pub ct: Option<u16>,
    /// Observable (`obs`).
    pub obs: bool,
    /// Human-readable title (`title`).
    pub title: Option<&'a str>,
}

impl Link<'_> {
    /// Whether the link passes the filter of one Uri-Query item (RFC 6690
    /// §4.1): `href`, `rt`, `if`, `ct`, `title` or `obs` compared to the
    /// value, a trailing `*` matching any suffix. An attribute the link
    /// does not have, or an unknown one, does not match. `rt` and `if`
    /// match any of their space-separated values.
    pub fn matches(&self, item: &QueryItem<'_>) -> bool {
        let wanted = item.value.unwrap_or_default();
        let fits = |have: &str| match wanted.strip_suffix(b"*") {
            Some(prefix) => have.as_bytes().starts_with(prefix),
            None => have.as_bytes() == wanted,
        };
        match item.name {
            b"href" => fits(self.target),
            b"rt" => self.rt.is_some_and(|rt| rt.split(' ').any(fits)),
            b"if" => self.interface.is_some_and(|i| i.split(' ').any(fits)),
            b"title" => self.title.is_some_and(fits),
            b"ct" => self.ct.is_some_and(|ct| fits(&ct.to_string())),
            b"obs" => self.obs,
            _ => false,
        }
    }
}

/// Appends `links` in link format, separated by commas, e.g.
/// `</devices/d1/up>;rt="shoal.up";ct=0,</devices/d1/down>;obs`. A `>` or a
/// control character in a target is percent-encoded; `"` and `\` in a
/// quoted value are escaped. Keep the list short enough for one block-wise
/// transfer (see [`Block2Slice`](super::Block2Slice)).
pub fn encode_link_format<'l>(out: &mut Vec<u8>, links: impl IntoIterator<Item = &'l Link<'l>>) {
    for (index, link) in links.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.push(b'<');
        for &byte in link.target.as_bytes() {
            if byte == b'>' || byte < 0x21 || byte == 0x7F {
                out.extend_from_slice(format!("%{byte:02X}").as_bytes());
            } else {
                out.push(byte);
            }
        }
        out.push(b'>');
        if let Some(rt) = link.rt {
            quoted(out, "rt", rt);
        }
        if let Some(interface) = link.interface {
            quoted(out, "if", interface);
        }
        if let Some(ct) = link.ct {
            out.extend_from_slice(format!(";ct={ct}").as_bytes());
        }
        if link.obs {
            out.extend_from_slice(b";obs");
        }
        if let Some(title) = link.title {
            quoted(out, "title", title);
        }
    }
}

fn quoted(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b';');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    for &byte in value.as_bytes() {
        if byte == b'"' || byte == b'\\' {
            out.push(b'\\');
        }
        out.push(byte);
    }
    out.push(b'"');
}
