//! JSON-RPC 2.0 wire format: parsing a request body into calls, and writing responses.
//!
//! Parsing borrows from the body: ids, methods and params stay as the exact JSON text the
//! client sent ([`RawValue`]), so an id such as `12345678901234567890` or `1.5` is echoed
//! byte for byte and params are forwarded without being re-encoded.
//!
//! The rules follow the specification (<https://www.jsonrpc.org/specification>):
//! - a body that is not JSON is a parse error (-32700, id null);
//! - a body that is JSON but neither an object nor a non-empty array is one invalid
//!   request (-32600, id null);
//! - an object is a valid request when `jsonrpc` is exactly `"2.0"`, `method` is a string,
//!   `params` (if present) is an array or object, and `id` (if present) is a string, number
//!   or null; a request without an `id` member is a notification;
//! - an invalid item is answered with -32600 and its id when the id itself was valid,
//!   null otherwise (so even an invalid "notification" is answered, as the spec's examples do).

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Error codes the gateway answers with. The -32000..-32099 range is the specification's
/// "server error" space; the gateway's own codes sit at -32050.. so they do not collide with
/// the -32000 that Ethereum clients use for execution errors.
pub mod codes {
    /// The body is not valid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a valid request object, or the batch is empty or too large.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method is unknown or not allowed by the policy.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The params of a method the gateway checks are malformed or over a limit.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The upstream could not be reached (connection refused, reset, no node available).
    pub const UPSTREAM_UNAVAILABLE: i64 = -32050;
    /// The upstream did not answer within the gateway's timeout.
    pub const UPSTREAM_TIMEOUT: i64 = -32051;
    /// The upstream answered something that is not a JSON-RPC response.
    pub const UPSTREAM_INVALID_RESPONSE: i64 = -32052;
    /// The upstream answered the batch but left this call out.
    pub const UPSTREAM_MISSING_RESPONSE: i64 = -32053;
}

/// The `id` of a call exactly as the client wrote it (a JSON string, number or `null`).
pub type RawId<'a> = &'a RawValue;

/// The JSON text `null`, used as the id of answers whose request id could not be read.
pub fn null_id() -> &'static RawValue {
    // `null` is valid JSON, so this borrow of a static literal cannot fail.
    serde_json::from_str("null").unwrap_or_else(|_| unreachable!("null is JSON"))
}

/// One well-formed call of a request.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// `None` for a notification (no `id` member at all); `Some(null)` is a request with id null.
    pub id: Option<RawId<'a>>,
    /// The method name, unescaped. Matching is exact: no trimming, case-sensitive.
    pub method: Cow<'a, str>,
    /// The method name as written in the body (a JSON string), for forwarding.
    pub raw_method: &'a RawValue,
    /// Params as written (an array or an object), if present.
    pub params: Option<&'a RawValue>,
}

impl Call<'_> {
    /// A notification has no `id` member and gets no response.
    pub fn is_notification(&self) -> bool {
        self.id.is_none()
    }
}

/// One element of a request: a valid call, or an invalid request answered with -32600.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    Call(Call<'a>),
    Invalid { id: RawId<'a>, reason: &'static str },
}

/// The shape of a parsed body.
#[derive(Debug)]
pub enum Body<'a> {
    /// A single request object (answered with a single response object).
    Single(Item<'a>),
    /// A non-empty array (answered with an array, or nothing if all are notifications).
    Batch(Vec<Item<'a>>),
}

/// Why a body is answered with one error object and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all: -32700.
    Parse,
    /// JSON, but not an object or a non-empty array (`[]`, `1`, `"x"`): -32600.
    NotARequest,
    /// A batch with more items than allowed: HTTP 413 with -32600 naming the cap.
    BatchTooLarge { items: usize, cap: usize },
}

/// Parses a request body. Batches longer than `max_batch_items` are rejected.
///
/// The common case is read in one pass: each element's members are collected as raw JSON
/// while the array is scanned ([`Element`]). Anything that pass refuses (a repeated member,
/// or a body that is not JSON) is read again the slow way, member by member, so that every
/// malformed body still gets its precise answer.
pub fn parse_body(body: &[u8], max_batch_items: usize) -> Result<Body<'_>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::Parse)?;
    let first = text.bytes().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => {
            let items: Vec<Item<'_>> = match serde_json::from_str::<Vec<Element<'_>>>(text) {
                Ok(elements) => elements.into_iter().map(Element::validate).collect(),
                Err(_) => {
                    let raws: Vec<&RawValue> =
                        serde_json::from_str(text).map_err(|_| BodyError::Parse)?;
                    raws.into_iter().map(parse_item).collect()
                }
            };
            if items.is_empty() {
                return Err(BodyError::NotARequest);
            }
            if items.len() > max_batch_items {
                return Err(BodyError::BatchTooLarge {
                    items: items.len(),
                    cap: max_batch_items,
                });
            }
            Ok(Body::Batch(items))
        }
        Some(b'{') => match serde_json::from_str::<Element<'_>>(text) {
            Ok(element) => Ok(Body::Single(element.validate())),
            Err(_) => {
                let raw: &RawValue = serde_json::from_str(text).map_err(|_| BodyError::Parse)?;
                Ok(Body::Single(parse_item(raw)))
            }
        },
        _ => match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Err(BodyError::NotARequest),
            Err(_) => Err(BodyError::Parse),
        },
    }
}

/// The members of a request object, each kept as raw JSON so that a wrong type is a
/// validation failure (answered with -32600) and not a parse failure. `None` means absent;
/// a member present as `null` is `Some("null")`.
#[derive(Default, Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

/// Deserializes a member that is present (even as `null`) to `Some`, so that "absent" and
/// "null" stay apart; serde's default for `Option` would fold `null` into `None`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// One element of a request, read in the same pass as the array around it.
enum Element<'a> {
    Object(RawRequest<'a>),
    NotAnObject,
}

impl<'a> Element<'a> {
    fn validate(self) -> Item<'a> {
        match self {
            Element::Object(request) => validate(request),
            Element::NotAnObject => invalid(None, "a request must be an object"),
        }
    }
}

impl<'de> Deserialize<'de> for Element<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> serde::de::Visitor<'de> for ElementVisitor {
    type Value = Element<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut request = RawRequest::default();
        while let Some(key) = map.next_key::<Member>()? {
            let slot = match key {
                Member::Jsonrpc => &mut request.jsonrpc,
                Member::Method => &mut request.method,
                Member::Params => &mut request.params,
                Member::Id => &mut request.id,
                Member::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                // Refused here; the slow path answers it as an invalid request.
                return Err(serde::de::Error::custom("repeated member"));
            }
            *slot = Some(map.next_value::<&'de RawValue>()?);
        }
        Ok(Element::Object(request))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Element::NotAnObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Element::NotAnObject)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Element::NotAnObject)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Element::NotAnObject)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Element::NotAnObject)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Element::NotAnObject)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Element::NotAnObject)
    }
}

/// A member name of a request object, read without allocating.
enum Member {
    Jsonrpc,
    Method,
    Params,
    Id,
    Other,
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MemberVisitor;
        impl serde::de::Visitor<'_> for MemberVisitor {
            type Value = Member;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, name: &str) -> Result<Member, E> {
                Ok(match name {
                    "jsonrpc" => Member::Jsonrpc,
                    "method" => Member::Method,
                    "params" => Member::Params,
                    "id" => Member::Id,
                    _ => Member::Other,
                })
            }
        }
        d.deserialize_str(MemberVisitor)
    }
}

fn invalid<'a>(id: Option<&'a RawValue>, reason: &'static str) -> Item<'a> {
    Item::Invalid {
        id: id.filter(|id| is_valid_id(id)).unwrap_or(null_id()),
        reason,
    }
}

/// The slow path for one element: read as raw JSON, then member by member.
fn parse_item(raw: &RawValue) -> Item<'_> {
    if !raw.get().starts_with('{') {
        return invalid(None, "a request must be an object");
    }
    match serde_json::from_str::<RawRequest<'_>>(raw.get()) {
        Ok(request) => validate(request),
        // Only repeated members can fail here: every member is accepted as raw JSON.
        Err(_) => invalid(None, "a request object must not repeat a member"),
    }
}

fn validate(request: RawRequest<'_>) -> Item<'_> {
    if let Some(id) = request.id
        && !is_valid_id(id)
    {
        return invalid(None, "id must be a string, a number or null");
    }
    if request.jsonrpc.and_then(json_str).as_deref() != Some("2.0") {
        return invalid(request.id, "jsonrpc must be exactly \"2.0\"");
    }
    let Some((method, raw_method)) = request.method.and_then(|m| json_str(m).map(|s| (s, m)))
    else {
        return invalid(request.id, "method must be a string");
    };
    if let Some(params) = request.params
        && !matches!(params.get().as_bytes().first(), Some(b'[' | b'{'))
    {
        return invalid(request.id, "params must be an array or an object");
    }
    Item::Call(Call {
        id: request.id,
        method,
        raw_method,
        params: request.params,
    })
}

fn is_valid_id(id: &RawValue) -> bool {
    matches!(
        id.get().as_bytes().first(),
        Some(b'"' | b'-' | b'0'..=b'9' | b'n')
    )
}

/// The value of a JSON string, borrowed when it has no escapes.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// Appends `{"jsonrpc":"2.0","id":ID,"result":RESULT}` to `out`.
pub fn write_result(out: &mut String, id: &RawValue, result: &str) {
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(id.get());
    out.push_str(r#","result":"#);
    out.push_str(result);
    out.push('}');
}

/// Appends `{"jsonrpc":"2.0","id":ID,"error":ERROR}` to `out`, `error` being raw JSON.
pub fn write_raw_error(out: &mut String, id: &RawValue, error: &str) {
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(id.get());
    out.push_str(r#","error":"#);
    out.push_str(error);
    out.push('}');
}

/// Appends an error response with `code` and `message` to `out`.
pub fn write_error(out: &mut String, id: &RawValue, code: i64, message: &str) {
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(id.get());
    out.push_str(r#","error":{"code":"#);
    // Writing into a String cannot fail.
    let _ = write!(out, "{code}");
    out.push_str(r#","message":"#);
    push_json_string(out, message);
    out.push_str("}}");
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    // Serializing a &str into a String cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(body: &str) -> Item<'_> {
        match parse_body(body.as_bytes(), 100) {
            Ok(Body::Single(item)) => item,
            other => panic!("expected a single item, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_call_keeps_id_method_and_params_as_written() {
        let Item::Call(call) = single(
            r#"{"jsonrpc":"2.0","id":12345678901234567890,"method":"eth_call","params":[{"a":1.50}]}"#,
        ) else {
            panic!("valid");
        };
        assert_eq!(call.id.map(RawValue::get), Some("12345678901234567890"));
        assert_eq!(call.method, "eth_call");
        assert_eq!(call.params.map(RawValue::get), Some(r#"[{"a":1.50}]"#));
    }

    #[test]
    fn absent_id_is_a_notification_and_null_id_is_not() {
        let Item::Call(notification) = single(r#"{"jsonrpc":"2.0","method":"m"}"#) else {
            panic!()
        };
        assert!(notification.is_notification());
        let Item::Call(null) = single(r#"{"jsonrpc":"2.0","method":"m","id":null}"#) else {
            panic!()
        };
        assert_eq!(null.id.map(RawValue::get), Some("null"));
    }

    #[test]
    fn escaped_method_names_are_unescaped_for_matching() {
        let Item::Call(call) = single(r#"{"jsonrpc":"2.0","id":1,"method":"eth\u005fcall"}"#)
        else {
            panic!()
        };
        assert_eq!(call.method, "eth_call");
    }

    #[test]
    fn invalid_items_say_why_and_keep_a_valid_id() {
        let cases = [
            (r#"{"jsonrpc":"1.0","id":7,"method":"m"}"#, "7", "jsonrpc"),
            (r#"{"id":7,"method":"m"}"#, "7", "jsonrpc"),
            (
                r#"{"jsonrpc":"2.0","id":"a","method":1}"#,
                r#""a""#,
                "method",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":"bar"}"#,
                "1",
                "params",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":null}"#,
                "1",
                "params",
            ),
            (r#"{"jsonrpc":"2.0","id":{},"method":"m"}"#, "null", "id"),
            (r#"{"jsonrpc":"2.0","id":[1],"method":"m"}"#, "null", "id"),
            (
                r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"m"}"#,
                "null",
                "repeat",
            ),
        ];
        for (body, want_id, want_reason) in cases {
            match single(body) {
                Item::Invalid { id, reason } => {
                    assert_eq!(id.get(), want_id, "{body}");
                    assert!(reason.contains(want_reason), "{body}: {reason}");
                }
                Item::Call(_) => panic!("{body} must be invalid"),
            }
        }
    }

    #[test]
    fn body_level_errors() {
        assert_eq!(
            parse_body(b"{\"jsonrpc\":", 100).err(),
            Some(BodyError::Parse)
        );
        assert_eq!(parse_body(b"\xff\xfe", 100).err(), Some(BodyError::Parse));
        assert_eq!(parse_body(b"", 100).err(), Some(BodyError::Parse));
        assert_eq!(parse_body(b"[]", 100).err(), Some(BodyError::NotARequest));
        assert_eq!(parse_body(b" 1 ", 100).err(), Some(BodyError::NotARequest));
        assert_eq!(
            parse_body(b"\"x\"", 100).err(),
            Some(BodyError::NotARequest)
        );
        assert_eq!(
            parse_body(b"[1,2,3]", 2).err(),
            Some(BodyError::BatchTooLarge { items: 3, cap: 2 })
        );
    }

    #[test]
    fn written_errors_are_valid_json_with_escaped_messages() {
        let mut out = String::new();
        write_error(
            &mut out,
            null_id(),
            codes::METHOD_NOT_FOUND,
            "method \"x\\y\" not found",
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["error"]["code"], -32601);
        assert_eq!(v["error"]["message"], "method \"x\\y\" not found");
        assert!(v["id"].is_null());
    }
}
