//! One reading of a request: what tollgate prices is exactly what it forwards.
//!
//! Tollgate prices a request by its reading of the target and method; the upstream then makes its own
//! reading of what it is sent. Every difference between the two is a free pass, so this module:
//!
//! 1. turns the client's target into one canonical form (origin-form, unreserved escapes decoded,
//!    `\` as `/`, slashes merged, `.`/`..` resolved, bytes outside the URI grammar escaped) and refuses
//!    what has no single meaning (`%00`, broken escapes, encoded slashes by default, non-UTF-8) — the
//!    proxy forwards this canonical target, never the client's original;
//! 2. lists the readings a common upstream could make of that canonical target — decoded once (never
//!    twice: nginx, Go, Express and Django decode once), letter case ignored (Express, ASP.NET),
//!    `;` parameters stripped (Spring, Tomcat), a format suffix stripped (Rails) — and the methods it
//!    could run (`X-HTTP-Method-Override` and its spellings, `_method`), so that a request is priced
//!    if any of those readings is priced (the tenant picks the dearest, [`crate::tenant`]).
//!
//! Pure: no I/O, no pingora. The front and the proxy both call [`read`] on the raw request.

use std::borrow::Cow;

use serde::Deserialize;

/// What to do with `%2F` / `%5C` (an encoded `/` or `\`) in a path (Envoy's
/// `path_with_escaped_slashes_action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashes {
    /// 400: upstreams disagree on whether it separates segments.
    #[default]
    Reject,
    /// Decoded to `/` and forwarded that way.
    Decode,
    /// Forwarded encoded; priced under both readings (a separator and not).
    Keep,
}

/// Whether the upstream matches paths with letter case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathCase {
    /// The upstream may ignore case (Express, ASP.NET): `/API/x` is priced as `/api/x` too.
    #[default]
    Any,
    /// The upstream matches case exactly: `/API/x` is only `/API/x`.
    Exact,
}

/// What `;` in a path segment means to the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathParameters {
    /// Priced as written and as Spring/Tomcat read it (`/api;x/premium` is `/api/premium`).
    #[default]
    Price,
    /// 400 for any `;` in the path.
    Reject,
    /// The upstream treats `;` as text.
    Literal,
}

/// What to do with the method-override conventions (`X-HTTP-Method-Override`, `X-HTTP-Method`,
/// `X-Method-Override`, `_method`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodOverride {
    /// Priced as the sent method and as every method they could turn it into.
    #[default]
    Price,
    /// 400 when a request carries one.
    Reject,
}

/// How requests are read (`[request]` in the config). Every default is the safe choice; the others
/// are for operators who know their upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    pub escaped_slashes: EscapedSlashes,
    /// `//` → `/` (forwarded merged). Off: empty segments are kept (and ignored for pricing).
    pub keep_empty_segments: bool,
    pub path_case: PathCase,
    pub path_parameters: PathParameters,
    /// Off: the upstream has no format suffixes, `/x.json` is only `/x.json`.
    pub no_format_suffixes: bool,
    pub method_override: MethodOverride,
    /// Bodies on GET, HEAD, OPTIONS and TRACE are refused unless this is set.
    pub allow_get_bodies: bool,
    /// Header names with `_` are dropped before forwarding unless this is set.
    pub keep_underscored_headers: bool,
    /// Requests with a body close their upstream connection afterwards unless this is set.
    pub reuse_upstream_after_body: bool,
}

/// Why a request has no single reading: answered 400 with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the request target must be a path like '/api/x' (origin-form); got '{0}'")]
    NotOriginForm(String),
    #[error("the method '{0}' must be upper case (methods are case-sensitive): send '{1}'")]
    MethodCase(String, String),
    #[error("'{0}' is not an HTTP method")]
    BadMethod(String),
    #[error("the path has a '%' that is not followed by two hex digits; encode '%' as '%25'")]
    BadEscape,
    #[error("the path contains a control character (raw or encoded, like %00); remove it")]
    ControlChar,
    #[error("the path contains an encoded slash (%2F or %5C), which upstreams read differently; send '/' or ask the operator to set request.escaped_slashes")]
    EscapedSlash,
    #[error("the path is not UTF-8 once percent-decoded; encode text as UTF-8")]
    NotUtf8,
    #[error(
        "the path contains ';', which some upstreams read as parameters; remove it (this gateway refuses ';' in paths)"
    )]
    PathParameter,
    #[error("the request carries a method override ({0}), which this gateway refuses; send the method itself")]
    MethodOverride(&'static str),
    #[error("a {0} request must not carry a body (upstreams that ignore it would read it as another request)")]
    BodyNotAllowed(String),
}

/// The headers that turn a request into another method in common frameworks (Rails, Express,
/// Laravel, ASP.NET).
pub const OVERRIDE_HEADERS: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// What [`read`] needs to know about a request, from whichever parser read it.
#[derive(Debug, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target as sent.
    pub target: &'a [u8],
    /// Values of the [`OVERRIDE_HEADERS`] present (the first few).
    pub overrides: [Option<&'a [u8]>; 4],
    /// The body is a form (urlencoded or multipart), where Rails and Laravel read `_method`.
    pub form: bool,
    /// The request has a body (Content-Length > 0 or Transfer-Encoding).
    pub has_body: bool,
}

/// The one reading of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading<'a> {
    pub method: http::Method,
    /// The canonical target (path and query): exactly what is forwarded. Borrowed when the client's
    /// target was canonical already.
    pub target: Cow<'a, str>,
    path_len: usize,
    /// Other methods an upstream could run this request as (method overrides).
    pub also: Vec<http::Method>,
}

impl Reading<'_> {
    /// The canonical path (no query).
    pub fn path(&self) -> &str {
        &self.target[..self.path_len]
    }

    /// Whether the canonical target differs from what the client sent (it must then be forwarded
    /// rewritten).
    pub fn rewritten(&self) -> bool {
        matches!(self.target, Cow::Owned(_))
    }

    /// The same target as a request with method `m` and no overrides (a preflight's announced request).
    pub fn as_method(&self, m: http::Method) -> Reading<'_> {
        Reading {
            method: m,
            target: Cow::Borrowed(&self.target),
            path_len: self.path_len,
            also: Vec::new(),
        }
    }

    /// Every method the request could run as: the sent one first.
    pub fn methods(&self) -> impl Iterator<Item = &http::Method> {
        std::iter::once(&self.method).chain(self.also.iter())
    }

    /// Calls `f` with each path an upstream could read this target as (decoded once, `/`-separated;
    /// the first is the plain decoded reading), and whether it was lowercased (to be matched against
    /// lowercased route patterns). Stops when `f` returns `true`.
    pub fn each_path(&self, rules: &Rules, mut f: impl FnMut(&str, bool) -> bool) {
        let path = self.path();
        // The common case: nothing to decode, no parameters, no suffix, lower case.
        let simple = !path.bytes().any(|b| matches!(b, b'%' | b';' | b'.' | b'A'..=b'Z'));
        if simple {
            f(path, false);
            return;
        }
        let mut seen: Vec<String> = Vec::with_capacity(4);
        let offer = |p: String, seen: &mut Vec<String>, f: &mut dyn FnMut(&str, bool) -> bool| -> bool {
            if seen.contains(&p) {
                return false;
            }
            let stop = f(&p, false)
                || (rules.path_case == PathCase::Any && p.bytes().any(|b| b.is_ascii_uppercase()) && {
                    let lower = p.to_ascii_lowercase();
                    f(&lower, true)
                });
            seen.push(p);
            stop
        };
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let split_slashes = [false, rules.escaped_slashes == EscapedSlashes::Keep];
        let strip_params = [
            false,
            rules.path_parameters == PathParameters::Price && path.contains(';'),
        ];
        for split in split_slashes.into_iter().enumerate().filter(|(i, s)| *i == 0 || *s) {
            for strip in strip_params.into_iter().enumerate().filter(|(i, s)| *i == 0 || *s) {
                let Some(base) = decoded_segments(&segs, split.1, strip.1) else {
                    continue;
                };
                for variant in suffix_variants(&base, !rules.no_format_suffixes) {
                    if offer(variant, &mut seen, &mut f) {
                        return;
                    }
                }
            }
        }
    }
}

/// Reads a request once, the way the proxy will forward it.
pub fn read<'a>(req: &Request<'a>, rules: &Rules) -> Result<Reading<'a>, Refused> {
    let method = method_of(req.method)?;
    if req.has_body && !rules.allow_get_bodies && is_bodyless(&method) {
        return Err(Refused::BodyNotAllowed(method.to_string()));
    }
    let (target, path_len) = canonical_target(req.target, &method, rules)?;
    let query = &target[path_len..];
    let mut also = Vec::new();
    let underscore_method = query_param(query, "_method");
    if req.overrides.iter().any(Option::is_some) || underscore_method.is_some() {
        if rules.method_override == MethodOverride::Reject {
            return Err(Refused::MethodOverride(if underscore_method.is_some() {
                "_method"
            } else {
                "X-HTTP-Method-Override"
            }));
        }
        for v in req.overrides.iter().flatten().copied().chain(underscore_method) {
            for m in v.split(|&b| b == b',') {
                if let Ok(m) = http::Method::from_bytes(m.trim_ascii().to_ascii_uppercase().as_slice()) {
                    if m != method && !also.contains(&m) {
                        also.push(m);
                    }
                }
            }
        }
    }
    if req.form && method == http::Method::POST && rules.method_override == MethodOverride::Price {
        // Rails and Laravel read `_method` from a form body, which tollgate does not read: any
        // method it could name is a reading.
        for m in [
            http::Method::GET,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
        ] {
            if !also.contains(&m) {
                also.push(m);
            }
        }
    }
    Ok(Reading {
        method,
        target,
        path_len,
        also,
    })
}

fn is_bodyless(m: &http::Method) -> bool {
    matches!(
        *m,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    )
}

fn method_of(m: &str) -> Result<http::Method, Refused> {
    match m {
        "GET" => return Ok(http::Method::GET),
        "POST" => return Ok(http::Method::POST),
        _ => {}
    }
    if m.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Refused::MethodCase(m.to_string(), m.to_ascii_uppercase()));
    }
    http::Method::from_bytes(m.as_bytes()).map_err(|_| Refused::BadMethod(m.escape_debug().to_string()))
}

/// The value of `name=` in a query string, if present.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q [u8]> {
    let q = query.strip_prefix('?')?;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v.as_bytes())
    })
}

/// Bytes that stand for themselves in a canonical path: unreserved, sub-delims, `:`, `@`.
fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || is_sub_delim(b) || matches!(b, b':' | b'@')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The canonical target and the length of its path. See the module doc for the rules.
pub fn canonical_target<'a>(
    raw: &'a [u8],
    method: &http::Method,
    rules: &Rules,
) -> Result<(Cow<'a, str>, usize), Refused> {
    let shown = || {
        String::from_utf8_lossy(&raw[..raw.len().min(64)])
            .escape_debug()
            .to_string()
    };
    if raw == b"*" {
        return if *method == http::Method::OPTIONS {
            Ok((Cow::Borrowed("*"), 1))
        } else {
            Err(Refused::NotOriginForm(shown()))
        };
    }
    // Absolute-form (RFC 9112 §3.2.2: servers must accept it): its path and query are the target.
    let mut origin = raw;
    for scheme in [&b"http://"[..], b"https://"] {
        if raw.len() > scheme.len() && raw[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &raw[scheme.len()..];
            let end = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
            if end == 0 {
                return Err(Refused::NotOriginForm(shown()));
            }
            origin = &rest[end..];
            break;
        }
    }
    let absolute = origin.len() != raw.len();
    if !(origin.first() == Some(&b'/') || (absolute && (origin.is_empty() || origin[0] == b'?'))) {
        return Err(Refused::NotOriginForm(shown()));
    }
    let (path, query) = match origin.iter().position(|&b| b == b'?') {
        Some(i) => (&origin[..i], &origin[i..]),
        None => (origin, &b""[..]),
    };
    // The query is forwarded as sent (non-ASCII bytes escaped), but it must have no controls,
    // spaces or '#'.
    if query.iter().any(|&b| b <= b' ' || b == 0x7f || b == b'#') {
        return Err(Refused::NotOriginForm(shown()));
    }
    let ascii_query = query.is_ascii();

    // Fast path: a path that is canonical already is forwarded untouched.
    if !absolute && ascii_query && is_canonical(path, rules) {
        let s = std::str::from_utf8(raw).expect("checked ASCII");
        return Ok((Cow::Borrowed(s), path.len()));
    }

    // 1. Escapes and bytes: each segment in canonical spelling.
    let mut segs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match b {
            b'/' | b'\\' => segs.push(Vec::new()),
            b'%' => {
                let (Some(h), Some(l)) = (
                    path.get(i + 1).and_then(|&c| hex(c)),
                    path.get(i + 2).and_then(|&c| hex(c)),
                ) else {
                    return Err(Refused::BadEscape);
                };
                let d = h * 16 + l;
                i += 2;
                let seg = segs.last_mut().expect("one segment at least");
                match d {
                    0..=0x1f | 0x7f => return Err(Refused::ControlChar),
                    b'/' | b'\\' => match rules.escaped_slashes {
                        EscapedSlashes::Reject => return Err(Refused::EscapedSlash),
                        EscapedSlashes::Decode => segs.push(Vec::new()),
                        EscapedSlashes::Keep => {
                            seg.extend_from_slice(&[b'%', HEX[(d >> 4) as usize], HEX[(d & 15) as usize]])
                        }
                    },
                    d if is_unreserved(d) => seg.push(d),
                    d => seg.extend_from_slice(&[b'%', HEX[(d >> 4) as usize], HEX[(d & 15) as usize]]),
                }
            }
            0..=0x20 | 0x7f => return Err(Refused::ControlChar),
            // A fragment is never part of a request target; some upstreams would cut the path here.
            b'#' => return Err(Refused::NotOriginForm(shown())),
            b if is_path_char(b) => segs.last_mut().expect("one segment at least").push(b),
            b => segs.last_mut().expect("one segment at least").extend_from_slice(&[
                b'%',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]),
        }
        i += 1;
    }
    if rules.path_parameters == PathParameters::Reject && segs.iter().any(|s| s.contains(&b';')) {
        return Err(Refused::PathParameter);
    }
    // 2. Slashes and dot segments (RFC 3986 §5.2.4); the first "segment" is the empty one before '/'.
    let trailing = segs.len() > 1 && matches!(segs.last().map(Vec::as_slice), Some(b"" | b"." | b".."));
    let mut out: Vec<&[u8]> = Vec::with_capacity(segs.len());
    for s in segs.iter().skip(1) {
        match s.as_slice() {
            b"." => {}
            b".." => {
                out.pop();
            }
            b"" if !rules.keep_empty_segments => {}
            s => out.push(s),
        }
    }
    let mut p = Vec::with_capacity(path.len() + 8);
    for s in &out {
        p.push(b'/');
        p.extend_from_slice(s);
    }
    if p.is_empty() || (trailing && !p.ends_with(b"/")) {
        p.push(b'/');
    }
    // Every reading must be text: decoding once must give UTF-8.
    if percent_decode(&p).is_err() {
        return Err(Refused::NotUtf8);
    }
    let path_len = p.len();
    for &b in query {
        if b.is_ascii() {
            p.push(b);
        } else {
            p.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
    let s = String::from_utf8(p).expect("canonical targets are ASCII");
    Ok((Cow::Owned(s), path_len))
}

/// A path that [`canonical_target`] would leave as it is.
fn is_canonical(path: &[u8], rules: &Rules) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    let mut prev_slash = false;
    for &b in path {
        match b {
            b'/' if prev_slash && !rules.keep_empty_segments => return false,
            b'/' => {}
            b'%' => return false,
            b';' if rules.path_parameters == PathParameters::Reject => return false,
            b if !is_path_char(b) => return false,
            _ => {}
        }
        prev_slash = b == b'/';
    }
    // No `.` or `..` segments.
    !path.split(|&b| b == b'/').any(|s| s == b"." || s == b"..")
}

/// Decodes every `%XX` once; the result must be UTF-8.
fn percent_decode(s: &[u8]) -> Result<String, Refused> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let (Some(h), Some(l)) = (s.get(i + 1).and_then(|&c| hex(c)), s.get(i + 2).and_then(|&c| hex(c))) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Refused::NotUtf8)
}

/// The canonical segments decoded once and joined with `/`: with `split`, an encoded slash
/// separates segments too; with `strip`, `;` parameters are removed first (and `.`/`..` that this
/// reveals are resolved, as Tomcat does). `None` if a segment is not text.
fn decoded_segments(segs: &[&str], split: bool, strip: bool) -> Option<String> {
    let mut out: Vec<String> = Vec::with_capacity(segs.len());
    for s in segs {
        let s = if strip { s.split(';').next().unwrap_or("") } else { s };
        let parts: Vec<String> = if split {
            percent_decode(s.as_bytes())
                .ok()?
                .split(['/', '\\'])
                .map(str::to_string)
                .collect()
        } else {
            // An encoded slash stays as written: it is not a separator in this reading.
            let mut text = String::new();
            let mut rest = s;
            while let Some(i) = rest.find("%2F").or_else(|| rest.find("%5C")) {
                text.push_str(&percent_decode(&rest.as_bytes()[..i]).ok()?);
                text.push_str(&rest[i..i + 3]);
                rest = &rest[i + 3..];
            }
            text.push_str(&percent_decode(rest.as_bytes()).ok()?);
            vec![text]
        };
        for part in parts {
            match part.as_str() {
                "" => {}
                "." if strip || split => {}
                ".." if strip || split => {
                    out.pop();
                }
                _ => out.push(part),
            }
        }
    }
    let mut p = String::with_capacity(segs.iter().map(|s| s.len() + 1).sum());
    for s in &out {
        p.push('/');
        p.push_str(s);
    }
    if p.is_empty() {
        p.push('/');
    }
    Some(p)
}

/// The path itself, then (when `on`) with the last segment's format suffix removed, at its last
/// and at its first dot (`/r.tar.gz` → `/r.tar`, `/r`), as Rails reads `/report.json`.
fn suffix_variants(path: &str, on: bool) -> Vec<String> {
    let mut v = vec![path.to_string()];
    if !on {
        return v;
    }
    let start = path.rfind('/').map_or(0, |i| i + 1);
    let last = &path[start..];
    for dot in [last.rfind('.'), last.find('.')].into_iter().flatten() {
        if dot > 0 {
            let cut = format!("{}{}", &path[..start], &last[..dot]);
            if !v.contains(&cut) {
                v.push(cut);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(p: &str) -> Result<String, Refused> {
        canonical_target(p.as_bytes(), &http::Method::GET, &Rules::default()).map(|(t, _)| t.into_owned())
    }

    fn readings(p: &str, rules: Rules) -> Vec<(String, bool)> {
        let r = read(
            &Request {
                method: "GET",
                target: p.as_bytes(),
                ..Default::default()
            },
            &rules,
        )
        .unwrap();
        let mut v = Vec::new();
        r.each_path(&rules, |p, lower| {
            v.push((p.to_string(), lower));
            false
        });
        v
    }

    #[test]
    fn canonical_targets() {
        for (raw, want) in [
            ("/api/x?q=1", "/api/x?q=1"),
            ("/a//b/./c/../d/", "/a/b/d/"),
            ("/%61pi/%7Euser", "/api/~user"),
            ("/api/premium/%2e%2e/%2e%2e/health", "/health"),
            ("/api/premium/report/../..", "/api/"),
            ("/api/premium/%252e%252e/x", "/api/premium/%252e%252e/x"),
            ("/api\\premium", "/api/premium"),
            ("/../..", "/"),
            ("/a/b/..", "/a/"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/a%3bb%20c", "/a%3Bb%20c"),
            ("/x\"y", "/x%22y"),
            ("http://evil.example/api/x?y", "/api/x?y"),
            ("HTTPS://h", "/"),
            ("/q?caf\u{e9}=1", "/q?caf%C3%A9=1"),
        ] {
            assert_eq!(canon(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn targets_without_one_meaning_are_refused() {
        for (raw, why) in [
            ("foo:/api/premium/x", "origin-form"),
            ("api/premium/x", "origin-form"),
            (" /api/premium/x", "origin-form"),
            ("*", "origin-form"),
            ("http:///x", "origin-form"),
            ("/a%zz", "'%'"),
            ("/a%2", "'%'"),
            ("/a%00b", "control"),
            ("/a%0ab", "control"),
            ("/a b", "control"),
            ("/a\tb", "control"),
            ("/api%2Fpremium", "encoded slash"),
            ("/api%5cpremium", "encoded slash"),
            ("/%c0%ae%c0%ae/x", "UTF-8"),
            ("/x?a b", "origin-form"),
            ("/x?a\u{1}", "origin-form"),
            ("/x#frag", "origin-form"),
        ] {
            let e = canon(raw).expect_err(raw).to_string();
            assert!(e.contains(why), "{raw}: {e}");
        }
        assert_eq!(
            canonical_target(b"*", &http::Method::OPTIONS, &Rules::default())
                .unwrap()
                .0,
            "*"
        );
    }

    #[test]
    fn canonicalisation_is_idempotent_and_borrows_clean_targets() {
        for raw in ["/a//b/%2e%2E/c", "/x/%E2%82%AC/;p=1/..;/y", "/Z/./.", "/%41%42%7e"] {
            let once = canon(raw).unwrap();
            assert_eq!(canon(&once).unwrap(), once, "{raw}");
        }
        let (t, _) = canonical_target(b"/api/x?q=1", &http::Method::GET, &Rules::default()).unwrap();
        assert!(matches!(t, Cow::Borrowed(_)));
    }

    #[test]
    fn readings_an_upstream_could_make() {
        let all = |p: &str| {
            readings(p, Rules::default())
                .into_iter()
                .map(|(p, _)| p)
                .collect::<Vec<_>>()
        };
        assert_eq!(all("/api/premium/x"), ["/api/premium/x"]);
        assert_eq!(all("/API/premium/x"), ["/API/premium/x", "/api/premium/x"]);
        assert_eq!(all("/api;/premium/x"), ["/api;/premium/x", "/api/premium/x"]);
        assert_eq!(
            all("/health/..;/api/premium/x"),
            ["/health/..;/api/premium/x", "/api/premium/x"]
        );
        assert_eq!(all("/api/premium.json"), ["/api/premium.json", "/api/premium"]);
        assert_eq!(all("/r.tar.gz"), ["/r.tar.gz", "/r.tar", "/r"]);
        // Decoded once, never twice.
        assert_eq!(all("/api/premium/%252e%252e/h"), ["/api/premium/%2e%2e/h"]);
        assert_eq!(all("/a%20b"), ["/a b"]);
        let exact = Rules {
            path_case: PathCase::Exact,
            path_parameters: PathParameters::Literal,
            no_format_suffixes: true,
            ..Default::default()
        };
        assert_eq!(readings("/API;x/a.json", exact).len(), 1);
        let keep = Rules {
            escaped_slashes: EscapedSlashes::Keep,
            ..Default::default()
        };
        let r: Vec<String> = readings("/api%2Fpremium", keep)
            .into_iter()
            .filter(|(_, lowered)| !lowered)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(r, ["/api%2Fpremium", "/api/premium"]);
    }

    #[test]
    fn methods_an_upstream_could_run() {
        let rules = Rules::default();
        let r = read(
            &Request {
                method: "POST",
                target: b"/x?_method=get",
                overrides: [Some(b"DELETE"), None, None, None],
                ..Default::default()
            },
            &rules,
        )
        .unwrap();
        assert_eq!(
            r.methods().cloned().collect::<Vec<_>>(),
            [http::Method::POST, http::Method::DELETE, http::Method::GET]
        );
        let form = read(
            &Request {
                method: "POST",
                target: b"/x",
                form: true,
                has_body: true,
                ..Default::default()
            },
            &rules,
        )
        .unwrap();
        assert!(form.methods().any(|m| m == http::Method::GET));
        let strict = Rules {
            method_override: MethodOverride::Reject,
            ..Default::default()
        };
        assert!(read(
            &Request {
                method: "POST",
                target: b"/x",
                overrides: [Some(b"GET"), None, None, None],
                ..Default::default()
            },
            &strict
        )
        .is_err());
    }

    #[test]
    fn methods_must_be_upper_case_and_get_has_no_body() {
        let r = |m: &'static str, body: bool| {
            read(
                &Request {
                    method: m,
                    target: b"/x",
                    has_body: body,
                    ..Default::default()
                },
                &Rules::default(),
            )
        };
        assert_eq!(
            r("get", false).unwrap_err().to_string(),
            "the method 'get' must be upper case (methods are case-sensitive): send 'GET'"
        );
        assert!(r("GET", true)
            .unwrap_err()
            .to_string()
            .contains("must not carry a body"));
        assert!(r("POST", true).is_ok());
        assert!(r("PROPFIND", false).is_ok());
    }
}
