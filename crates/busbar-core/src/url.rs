//! Small pieces of URL handling: percent-encoding, and showing a URL without its secrets.

/// Decodes the `%XX` escapes of a URL part (credentials, parameter values). The error says
/// what is wrong in words: an escape cut short, one that is not hex, or escapes that do not
/// form UTF-8.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("a '%' escape is cut short")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad '%' escape %{hex}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "'%' escapes do not form UTF-8".into())
}

/// Percent-encodes everything but the unreserved characters (letters, digits, `- . _ ~`),
/// so the text can go in any URL part or form field (`p@ss/` becomes `p%40ss%2F`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `url` as it may be shown in messages and logs: a password becomes `***`, and so does a
/// user name given without one, which several brokers read as a token (`nats://TOKEN@host`).
/// The login ends at the last `@` before the path or the query (a query value may hold an
/// `@`).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => format!("{scheme}://***@{host}{path}"),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{percent_decode, percent_encode, redact};

    #[test]
    fn redacts_passwords_and_lone_user_names() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("nats://s3cr3t-token@h"), "nats://***@h");
        assert_eq!(redact("mqtt://u:p@ss@h"), "mqtt://u:***@h");
        // An `@` in the query is not the end of a login.
        assert_eq!(redact("mqtt://:p@h?x=@"), "mqtt://:***@h?x=@");
        assert_eq!(redact("mqtt://h?ca=a@b"), "mqtt://h?ca=a@b");
        assert_eq!(redact("mem://"), "mem://");
    }

    #[test]
    fn encoding_round_trips() {
        for text in ["p@ss:w/rd é", "plain-._~", ""] {
            assert_eq!(percent_decode(&percent_encode(text)).as_deref(), Ok(text));
        }
        assert_eq!(percent_encode("a b/c&=é"), "a%20b%2Fc%26%3D%C3%A9");
    }

    #[test]
    fn escapes_decode_and_bad_ones_say_why() {
        assert_eq!(percent_decode("p%40ss%2F").as_deref(), Ok("p@ss/"));
        assert_eq!(percent_decode("plain").as_deref(), Ok("plain"));
        assert!(percent_decode("a%4").is_err_and(|e| e.contains("cut short")));
        assert!(percent_decode("a%zz").is_err_and(|e| e.contains("%zz")));
        assert!(percent_decode("%ff").is_err_and(|e| e.contains("UTF-8")));
        // A multi-byte character before an escape does not confuse the byte offsets.
        assert_eq!(percent_decode("é%41").as_deref(), Ok("éA"));
    }
}
