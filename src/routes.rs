//! Route matching: method + path pattern → route index, in a segment trie.
//!
//! Patterns are exact (`/api/weather`), prefix (`/api/*`, which also matches `/api` itself) or carry
//! `{param}` segments (`/users/{id}/orders`). The most specific route wins: an exact segment beats a
//! `{param}`, which beats a `*`; a route for the request's method beats one for any method.
//!
//! Request paths are normalised before matching so that a paywall cannot be walked around with
//! `//`, `/./`, `/../`, a trailing `/` or percent-encoding (`/%61pi` is `/api`).

use std::collections::HashMap;

/// A method a route applies to; `Any` matches every method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodMatch {
    Any,
    Only(http::Method),
}

#[derive(Debug, Default)]
struct Endpoints {
    any: Option<usize>,
    by_method: Vec<(http::Method, usize)>,
}

impl Endpoints {
    fn get(&self, method: &http::Method) -> Option<usize> {
        let exact = |m: &http::Method| self.by_method.iter().find(|(k, _)| k == m).map(|(_, r)| *r);
        exact(method)
            .or_else(|| {
                if method == http::Method::HEAD {
                    exact(&http::Method::GET)
                } else {
                    None
                }
            })
            .or(self.any)
    }
    fn insert(&mut self, method: &MethodMatch, route: usize) -> Result<(), usize> {
        match method {
            MethodMatch::Any => match self.any {
                Some(prev) => Err(prev),
                None => {
                    self.any = Some(route);
                    Ok(())
                }
            },
            MethodMatch::Only(m) => match self.by_method.iter().find(|(k, _)| k == m) {
                Some((_, prev)) => Err(*prev),
                None => {
                    self.by_method.push((m.clone(), route));
                    Ok(())
                }
            },
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    /// Routes whose pattern ends at this node.
    here: Endpoints,
    /// Routes whose pattern ends with `/*` at this node.
    prefix: Endpoints,
}

/// Why a route pattern was refused; the config layer prefixes the key (`routes[2].path`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("'{0}' must start with '/'")]
    NoLeadingSlash(String),
    #[error("'{0}': '*' is only allowed as the whole last segment, as in '/api/*'")]
    BadWildcard(String),
    #[error("'{0}': a parameter segment must look like '{{name}}' with letters, digits or '_'")]
    BadParam(String),
    #[error("same method and path as routes[{0}]")]
    Duplicate(usize),
}

/// The compiled route table.
#[derive(Debug, Default)]
pub struct RouteTable {
    root: Node,
    len: usize,
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a route under `index` (the caller's index into its own list of routes).
    pub fn insert(&mut self, method: MethodMatch, pattern: &str, index: usize) -> Result<(), PatternError> {
        if !pattern.starts_with('/') {
            return Err(PatternError::NoLeadingSlash(pattern.to_string()));
        }
        let segs: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
        let mut node = &mut self.root;
        for (i, seg) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            if *seg == "*" {
                if !last {
                    return Err(PatternError::BadWildcard(pattern.to_string()));
                }
                node.prefix.insert(&method, index).map_err(PatternError::Duplicate)?;
                self.len += 1;
                return Ok(());
            }
            if seg.contains('*') {
                return Err(PatternError::BadWildcard(pattern.to_string()));
            }
            if seg.starts_with('{') || seg.ends_with('}') || seg.contains('{') {
                let name = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
                match name {
                    Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                        node = node.param.get_or_insert_with(Default::default);
                    }
                    _ => return Err(PatternError::BadParam(pattern.to_string())),
                }
            } else {
                node = node.children.entry((*seg).into()).or_default();
            }
        }
        node.here.insert(&method, index).map_err(PatternError::Duplicate)?;
        self.len += 1;
        Ok(())
    }

    /// Finds the route for a request; `path` is the raw request path (no query).
    pub fn find(&self, method: &http::Method, path: &str) -> Option<usize> {
        // Most paths need no decoding: walk them in place, without allocating.
        let dirty = path.contains(['%', '\\']) || path.split('/').any(|s| s == "." || s == "..");
        if dirty {
            find_in(&self.root, &normalize_path(path), method)
        } else {
            find_in(&self.root, path, method)
        }
    }
}

/// Matches the rest of a path (`a/b/c`, empty segments skipped) below `node`.
fn find_in(node: &Node, rest: &str, method: &http::Method) -> Option<usize> {
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        return node.here.get(method).or_else(|| node.prefix.get(method));
    }
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if let Some(child) = node.children.get(first) {
        if let Some(r) = find_in(child, tail, method) {
            return Some(r);
        }
    }
    if let Some(param) = &node.param {
        if let Some(r) = find_in(param, tail, method) {
            return Some(r);
        }
    }
    node.prefix.get(method)
}

/// Normalises a request path the way an upstream might read it: percent-decoding, `//` collapsed,
/// `.` and `..` resolved, no trailing `/`. Only used to choose a route; the request is forwarded as sent.
pub fn normalize_path(path: &str) -> String {
    let decoded = percent_decode(path);
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(decoded.len() + 1);
    for seg in out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') {
        return std::borrow::Cow::Borrowed(s);
    }
    // Decode repeatedly so that double encoding (%252e) cannot hide a segment either.
    let mut cur = s.to_string();
    for _ in 0..3 {
        let next = percent_decode_once(&cur);
        if next == cur {
            break;
        }
        cur = next;
    }
    std::borrow::Cow::Owned(cur)
}

fn percent_decode_once(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn table(routes: &[(&str, &str)]) -> RouteTable {
        let mut t = RouteTable::new();
        for (i, (m, p)) in routes.iter().enumerate() {
            let m = if *m == "*" {
                MethodMatch::Any
            } else {
                MethodMatch::Only(m.parse().unwrap())
            };
            t.insert(m, p, i).unwrap();
        }
        t
    }

    #[test]
    fn most_specific_route_wins() {
        let t = table(&[
            ("*", "/api/*"),
            ("GET", "/api/users/{id}"),
            ("GET", "/api/users/me"),
            ("POST", "/api/users/{id}"),
            ("*", "/exact"),
        ]);
        let get = Method::GET;
        assert_eq!(t.find(&get, "/api/users/me"), Some(2));
        assert_eq!(t.find(&get, "/api/users/42"), Some(1));
        assert_eq!(t.find(&Method::POST, "/api/users/42"), Some(3));
        assert_eq!(t.find(&Method::DELETE, "/api/users/42"), Some(0));
        assert_eq!(t.find(&get, "/api/users/42/orders"), Some(0));
        assert_eq!(t.find(&get, "/api"), Some(0));
        assert_eq!(t.find(&get, "/apix"), None);
        assert_eq!(t.find(&get, "/exact"), Some(4));
        assert_eq!(t.find(&get, "/exact/more"), None);
        assert_eq!(t.find(&get, "/"), None);
        assert_eq!(t.find(&Method::HEAD, "/api/users/me"), Some(2));
    }

    #[test]
    fn backtracks_from_a_dead_end_exact_branch() {
        let t = table(&[("GET", "/a/b/c"), ("GET", "/a/{x}/d")]);
        assert_eq!(t.find(&Method::GET, "/a/b/d"), Some(1));
        assert_eq!(t.find(&Method::GET, "/a/b/c"), Some(0));
    }

    #[test]
    fn paywall_cannot_be_walked_around() {
        let t = table(&[("GET", "/api/premium")]);
        for p in [
            "/api/premium",
            "/api/premium/",
            "//api//premium",
            "/api/./premium",
            "/x/../api/premium",
            "/%61pi/premium",
            "/api%2Fpremium",
            "/api/%2570remium",
            "/api\\premium",
        ] {
            assert_eq!(t.find(&Method::GET, p), Some(0), "{p} walked around the paywall");
        }
    }

    #[test]
    fn refuses_bad_patterns() {
        let mut t = RouteTable::new();
        assert!(matches!(
            t.insert(MethodMatch::Any, "api", 0),
            Err(PatternError::NoLeadingSlash(_))
        ));
        assert!(matches!(
            t.insert(MethodMatch::Any, "/a/*/b", 0),
            Err(PatternError::BadWildcard(_))
        ));
        assert!(matches!(
            t.insert(MethodMatch::Any, "/a/x*", 0),
            Err(PatternError::BadWildcard(_))
        ));
        assert!(matches!(
            t.insert(MethodMatch::Any, "/a/{b", 0),
            Err(PatternError::BadParam(_))
        ));
        assert!(matches!(
            t.insert(MethodMatch::Any, "/a/{}", 0),
            Err(PatternError::BadParam(_))
        ));
        t.insert(MethodMatch::Only(Method::GET), "/a/{id}", 0).unwrap();
        assert_eq!(
            t.insert(MethodMatch::Only(Method::GET), "/a/{other}", 1),
            Err(PatternError::Duplicate(0))
        );
        t.insert(MethodMatch::Only(Method::POST), "/a/{other}", 2).unwrap();
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize_path("/a//b/./c/../d/"), "/a/b/d");
        assert_eq!(normalize_path("/../.."), "/");
        assert_eq!(normalize_path("/bad%zz%"), "/bad%zz%");
    }
}
