//! Keeping secrets out of messages.
//!
//! Hosted RPC providers and facilitators put API keys in URL paths and queries
//! (`https://base-mainnet.g.alchemy.com/v2/KEY`), and HTTP client errors quote the URL they failed on.
//! Logs keep a URL's scheme, host and port only; clients get no URL and no upstream error text at all
//! (their messages are written by tollgate, not passed through).

/// `scheme://host[:port]` of a URL.
pub fn url(u: &url::Url) -> String {
    match u.port() {
        Some(p) => format!("{}://{}:{p}", u.scheme(), u.host_str().unwrap_or("?")),
        None => format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?")),
    }
}

/// [`url`] of a URL given as text; text that is not a URL is replaced by a placeholder.
pub fn url_str(s: &str) -> String {
    url::Url::parse(s).map(|u| url(&u)).unwrap_or_else(|_| "<url>".into())
}

/// `text` with every URL in it cut down to [`url`] (error messages of HTTP clients name the URL
/// they failed on, query string included), and every long token that could be a key (24 or more
/// letters, digits, `_` or `-`, not a `0x` hash or address) masked: remote services echo keys in
/// their error bodies.
pub fn text(text: &str) -> String {
    mask_tokens(&urls(text))
}

fn mask_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if token.len() >= 24 && !token.starts_with("0x") {
            out.push_str("<redacted>");
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The scheme: the letters right before "://".
        let scheme_start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map_or(0, |j| j + 1);
        let end = rest[i + 3..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | ',' | ']'))
            .map_or(rest.len(), |j| i + 3 + j);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&url_str(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_paths_queries_and_credentials() {
        let u: url::Url = "https://base-mainnet.g.alchemy.com/v2/SECRETKEY?x=1".parse().unwrap();
        assert_eq!(super::url(&u), "https://base-mainnet.g.alchemy.com");
        let u: url::Url = "http://127.0.0.1:8545".parse().unwrap();
        assert_eq!(super::url(&u), "http://127.0.0.1:8545");
        assert_eq!(
            super::text(
                "error sending request for url (https://user:pw@rpc.example/key/SECRET?token=SECRET): timed out"
            ),
            "error sending request for url (https://rpc.example): timed out"
        );
        assert_eq!(super::text("no urls here"), "no urls here");
        assert!(!super::text("a wss://x.io/SECRET and http://y/SECRET").contains("SECRET"));
        assert_eq!(
            super::text(r#"HTTP error 500 with body: {"error":"bad key sk_live_0123456789abcdefghijkl"}"#),
            r#"HTTP error 500 with body: {"error":"bad key <redacted>"}"#
        );
        let hash = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
        assert_eq!(super::text(hash), hash, "hashes and addresses stay readable");
    }
}
