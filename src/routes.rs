//! Route matching: method + path pattern → route index, in a segment trie.
//!
//! Patterns are exact (`/api/weather`), prefix (`/api/*`, which also matches `/api` itself) or carry
//! `{param}` segments (`/users/{id}/orders`). The most specific route wins: an exact segment beats a
//! `{param}`, which beats a `*`; a route for the request's method beats one for any method.
//!
//! The table matches one reading of a path at a time; [`crate::reading`] decides which readings a
//! request has (decoding, case, parameters, suffixes) and [`crate::tenant::Tenant::route_for`] asks
//! for each.

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

    /// Finds the route for one reading of a request path ([`crate::reading`]): already decoded,
    /// `/`-separated; empty segments are skipped. Nothing is decoded or resolved here.
    pub fn find(&self, method: &http::Method, path: &str) -> Option<usize> {
        find_in(&self.root, path, method)
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
}
