//! AWS Signature Version 4: checks that a request was signed with one of the configured secret
//! keys, in either form AWS clients use — the `Authorization` header (SDKs, the CLI) or a
//! presigned URL whose query carries the signature (`X-Amz-Algorithm` … `X-Amz-Signature`).
//!
//! The canonical request is rebuilt from the request exactly as it arrived: the path as sent,
//! normalized and URI-encoded once more (every service but S3 signs the path encoded twice); the
//! query decoded and re-encoded with the strict RFC 3986 unreserved set, then sorted; the headers
//! the client listed in `SignedHeaders`, lowercased, trimmed, runs of spaces collapsed; and the
//! SHA-256 of the body. Signatures are compared in constant time.
//!
//! Answers follow AWS: no signature at all is `MissingAuthenticationToken`, an unknown access key
//! `InvalidClientTokenId`, a wrong signature (or a wrong scope, or a time more than 15 minutes
//! away) `SignatureDoesNotMatch`, malformed signing parameters `IncompleteSignature`, and a
//! presigned URL past its expiry `RequestExpired`.

use std::collections::BTreeMap;
use std::fmt;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{ErrorCode, SqsError};

type HmacSha256 = Hmac<Sha256>;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's signing time may be from the server's clock, either way (AWS: 15 min).
pub const MAX_CLOCK_SKEW_SECS: u64 = 15 * 60;
/// Longest validity a presigned URL may ask for (AWS: 7 days).
pub const MAX_PRESIGNED_EXPIRES_SECS: u64 = 7 * 24 * 60 * 60;
/// The payload hash a presigned URL may sign instead of the body's.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Services whose scope is accepted on this port: SQS now, SNS when it joins the listener.
pub const SIGNING_SERVICES: [&str; 2] = ["sqs", "sns"];
const TERMINATOR: &str = "aws4_request";

/// Access key id → secret access key. Empty means authentication is off and any credentials
/// (or none) are accepted, as local emulators do.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    secrets: BTreeMap<String, String>,
}

impl Credentials {
    pub fn new(secrets: BTreeMap<String, String>) -> Self {
        Credentials { secrets }
    }

    /// True when no keys are configured: requests are not authenticated.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn secret(&self, access_key_id: &str) -> Option<&str> {
        self.secrets.get(access_key_id).map(String::as_str)
    }

    pub fn access_key_ids(&self) -> impl Iterator<Item = &str> {
        self.secrets.keys().map(String::as_str)
    }
}

impl FromIterator<(String, String)> for Credentials {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Credentials { secrets: iter.into_iter().collect() }
    }
}

/// Secrets never reach logs or `{:?}` output; key ids are not secret and help debugging.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.secrets.keys().map(|k| (k, "<secret>"))).finish()
    }
}

/// The parts of an HTTP request a signature covers, as they arrived.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path exactly as sent (still percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// The signing parameters read from the `Authorization` header or the presigned query.
struct Signature {
    scope: Scope,
    signed_headers: String,
    signature: String,
    amz_date: String,
    /// Presigned URLs only: seconds after `amz_date` the URL stays valid.
    expires: Option<u64>,
}

/// `AKID/20150830/us-east-1/sqs/aws4_request`, split.
struct Scope {
    access_key: String,
    date: String,
    region: String,
    service: String,
    terminator: String,
}

impl Scope {
    fn parse(credential: &str) -> Result<Scope, SqsError> {
        let parts: Vec<&str> = credential.split('/').collect();
        let [access_key, date, region, service, terminator] = parts[..] else {
            return Err(incomplete(format!(
                "Credential should have the form <access key id>/<date>/<region>/<service>/aws4_request, \
                 not '{credential}'."
            )));
        };
        if access_key.is_empty() {
            return Err(incomplete("Credential names no access key id."));
        }
        Ok(Scope {
            access_key: access_key.to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            terminator: terminator.to_owned(),
        })
    }

    /// The scope as it goes into the string to sign (everything after the access key).
    fn string(&self) -> String {
        format!("{}/{}/{}/{}", self.date, self.region, self.service, self.terminator)
    }
}

fn incomplete(message: impl Into<String>) -> SqsError {
    SqsError::new(ErrorCode::IncompleteSignature, message)
}

fn mismatch(message: impl Into<String>) -> SqsError {
    SqsError::new(ErrorCode::SignatureDoesNotMatch, message)
}

const MISMATCH_MESSAGE: &str = "The request signature we calculated does not match the signature you \
     provided. Check your AWS Secret Access Key and signing method. Consult the service documentation \
     for details.";

/// Checks `req`'s signature against `credentials` at time `now_secs` (Unix seconds) for
/// `region`. Returns the access key id that signed it.
pub fn verify(
    req: &SignedRequest<'_>,
    credentials: &Credentials,
    region: &str,
    now_secs: u64,
) -> Result<String, SqsError> {
    let query = split_query(req.query);
    let presigned = query
        .iter()
        .any(|(k, _)| matches!(k.as_slice(), b"X-Amz-Algorithm" | b"X-Amz-Credential" | b"X-Amz-Signature"));
    let header = req.headers.get(axum::http::header::AUTHORIZATION);
    let sig = match (header, presigned) {
        (None, false) => {
            return Err(SqsError::new(
                ErrorCode::MissingAuthenticationToken,
                "Request is missing Authentication Token",
            ))
        }
        (Some(_), true) => {
            return Err(incomplete(
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the \
                 Authorization header should be specified.",
            ))
        }
        (Some(value), false) => {
            let value = value.to_str().map_err(|_| incomplete("The Authorization header is not ASCII."))?;
            parse_authorization(value, req.headers)?
        }
        (None, true) => parse_presigned(&query)?,
    };

    let Some(secret) = credentials.secret(&sig.scope.access_key) else {
        return Err(SqsError::new(
            ErrorCode::InvalidClientTokenId,
            "The security token included in the request is invalid.",
        ));
    };

    let signed_at = parse_amz_date(&sig.amz_date).ok_or_else(|| {
        incomplete(format!(
            "Date must be in ISO-8601 'basic format' (YYYYMMDD'T'HHMMSS'Z'): '{}'.",
            sig.amz_date
        ))
    })?;
    check_time(&sig, signed_at, now_secs)?;
    check_scope(&sig.scope, &sig.amz_date, region)?;

    let signed_headers: Vec<&str> = sig.signed_headers.split(';').collect();
    if signed_headers.iter().any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase())) {
        return Err(incomplete(format!(
            "SignedHeaders must be lowercase header names separated by ';': '{}'.",
            sig.signed_headers
        )));
    }
    if !signed_headers.contains(&"host") {
        return Err(incomplete("'Host' must be a 'SignedHeader' in the AWS Authorization."));
    }
    let provided = decode_hex(&sig.signature);
    let canonical_query = canonical_query(&query, sig.expires.is_some());
    let key = signing_key(secret, &sig.scope.date, &sig.scope.region, &sig.scope.service);

    // A presigned URL may sign its payload as UNSIGNED-PAYLOAD (S3-style presigners do); the
    // header form always signs the body, so a body changed in transit never verifies.
    let body_hash = hex(&Sha256::digest(req.body));
    let mut payload_hashes = vec![body_hash.as_str()];
    if sig.expires.is_some() {
        payload_hashes.push(UNSIGNED_PAYLOAD);
    }
    for payload_hash in payload_hashes {
        let creq = canonical_request(
            req.method,
            req.path,
            &canonical_query,
            req.headers,
            &signed_headers,
            payload_hash,
        );
        let to_sign = string_to_sign(&sig.amz_date, &sig.scope.string(), &creq);
        if let Some(provided) = &provided {
            if signature_matches(&key, &to_sign, provided) {
                return Ok(sig.scope.access_key);
            }
        }
    }
    Err(mismatch(MISMATCH_MESSAGE))
}

/// `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`, plus the date header.
fn parse_authorization(value: &str, headers: &HeaderMap) -> Result<Signature, SqsError> {
    let value = value.trim();
    let (algorithm, rest) = value.split_once(' ').unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'; only {ALGORITHM} (Signature Version 4) is accepted."
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((name, v)) = part.split_once('=') else {
            return Err(incomplete(format!("Authorization header element '{part}' has no '='.")));
        };
        match name.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed_headers = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => {}
        }
    }
    let need = |v: Option<&str>, name: &str| {
        v.filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| incomplete(format!("Authorization header requires '{name}' parameter.")))
    };
    let credential = need(credential, "Credential")?;
    let signed_headers = need(signed_headers, "SignedHeaders")?;
    let signature = need(signature, "Signature")?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| incomplete("Authorization header requires existence of a 'X-Amz-Date' header."))?;
    Ok(Signature { scope: Scope::parse(&credential)?, signed_headers, signature, amz_date, expires: None })
}

/// The `X-Amz-*` parameters of a presigned URL.
fn parse_presigned(query: &[(Vec<u8>, Vec<u8>)]) -> Result<Signature, SqsError> {
    let param = |name: &str| -> Result<String, SqsError> {
        let mut values = query.iter().filter(|(k, _)| k == name.as_bytes());
        match (values.next(), values.next()) {
            (Some((_, v)), None) => String::from_utf8(v.clone())
                .map_err(|_| incomplete(format!("Query parameter {name} is not valid UTF-8."))),
            (None, _) => Err(incomplete(format!(
                "AWS query-string parameters must include '{name}'. Re-examine the query-string parameters."
            ))),
            (Some(_), Some(_)) => Err(incomplete(format!("Query parameter {name} is given more than once."))),
        }
    };
    let algorithm = param("X-Amz-Algorithm")?;
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'; only {ALGORITHM} (Signature Version 4) is accepted."
        )));
    }
    let expires_text = param("X-Amz-Expires")?;
    let expires = expires_text
        .parse::<u64>()
        .ok()
        .filter(|e| *e <= MAX_PRESIGNED_EXPIRES_SECS)
        .ok_or_else(|| {
            incomplete(format!(
                "X-Amz-Expires must be a number of seconds from 0 to {MAX_PRESIGNED_EXPIRES_SECS}, not '{expires_text}'."
            ))
        })?;
    Ok(Signature {
        scope: Scope::parse(&param("X-Amz-Credential")?)?,
        signed_headers: param("X-Amz-SignedHeaders")?,
        signature: param("X-Amz-Signature")?,
        amz_date: param("X-Amz-Date")?,
        expires: Some(expires),
    })
}

/// A signature is good for 15 minutes either side of its time; a presigned URL additionally
/// only until its expiry.
fn check_time(sig: &Signature, signed_at: u64, now: u64) -> Result<(), SqsError> {
    if signed_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        let limit = now.saturating_add(MAX_CLOCK_SKEW_SECS);
        return Err(mismatch(format!(
            "Signature not yet current: {} is still later than {} ({} + 15 min.)",
            sig.amz_date,
            format_amz_date(limit),
            format_amz_date(now)
        )));
    }
    match sig.expires {
        None if signed_at.saturating_add(MAX_CLOCK_SKEW_SECS) < now => {
            let limit = now.saturating_sub(MAX_CLOCK_SKEW_SECS);
            Err(mismatch(format!(
                "Signature expired: {} is now earlier than {} ({} - 15 min.)",
                sig.amz_date,
                format_amz_date(limit),
                format_amz_date(now)
            )))
        }
        Some(expires) if signed_at.saturating_add(expires) < now => {
            Err(SqsError::new(ErrorCode::RequestExpired, "Request has expired."))
        }
        _ => Ok(()),
    }
}

fn check_scope(scope: &Scope, amz_date: &str, region: &str) -> Result<(), SqsError> {
    if !amz_date.starts_with(&scope.date) || scope.date.len() != 8 {
        return Err(mismatch(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
             '{}' != '{}', from '{amz_date}'.",
            scope.date,
            amz_date.get(..8).unwrap_or(amz_date)
        )));
    }
    if scope.region != region {
        return Err(mismatch(format!(
            "Credential should be scoped to a valid region, not '{}'.",
            scope.region
        )));
    }
    if !SIGNING_SERVICES.contains(&scope.service.as_str()) {
        return Err(mismatch(format!(
            "Credential should be scoped to correct service: 'sqs', not '{}'.",
            scope.service
        )));
    }
    if scope.terminator != TERMINATOR {
        return Err(mismatch(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{}'.",
            scope.terminator
        )));
    }
    Ok(())
}

/// The canonical request, byte for byte (header values may hold any bytes).
pub fn canonical_request(
    method: &str,
    raw_path: &str,
    canonical_query: &str,
    headers: &HeaderMap,
    signed_headers: &[&str],
    payload_hash: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(raw_path).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query.as_bytes());
    out.push(b'\n');
    for name in signed_headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        // Repeated headers are joined by ',' in the order they arrived.
        for (i, value) in headers.get_all(*name).iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            trim_all(value.as_bytes(), &mut out);
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.join(";").as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

/// Header value with surrounding whitespace removed and inner runs of spaces collapsed to one.
fn trim_all(value: &[u8], out: &mut Vec<u8>) {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_space(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !is_space(b)).map_or(start, |i| i + 1);
    let mut in_space = false;
    for b in &value[start..end] {
        if is_space(b) {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(*b);
            in_space = false;
        }
    }
}

/// The path as sent, with `.`/`..` segments resolved and repeated slashes merged (what the AWS
/// SDKs sign), then URI-encoded once more: non-S3 services sign the path encoded twice.
pub fn canonical_uri(raw_path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in raw_path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut path = String::from("/");
    path.push_str(&segments.join("/"));
    if raw_path.ends_with('/') && !segments.is_empty() {
        path.push('/');
    }
    uri_encode(path.as_bytes(), true)
}

/// The raw query split into percent-decoded `(name, value)` pairs. `+` is a literal plus
/// here: SigV4 signers encode a space as `%20`.
fn split_query(raw: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k.as_bytes()), percent_decode(v.as_bytes()))
        })
        .collect()
}

/// Every parameter re-encoded strictly and sorted by name, then value; a presigned URL's own
/// `X-Amz-Signature` is not part of what it signs.
fn canonical_query(params: &[(Vec<u8>, Vec<u8>)], presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| !(presigned && k == b"X-Amz-Signature"))
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// Percent-encodes every byte outside RFC 3986's unreserved set (`A-Z a-z 0-9 - _ . ~`), in
/// uppercase hex; `/` too unless `keep_slash`.
pub fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` → byte; a `%` not followed by two hex digits stays as it is.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hexval = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let (Some(h), Some(l)) =
                (s.get(i + 1).copied().and_then(hexval), s.get(i + 2).copied().and_then(hexval))
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &[u8]) -> String {
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(canonical_request)))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, TERMINATOR.as_bytes())
}

/// The signature (lowercase hex) of `string_to_sign`; what a client puts in `Signature=`.
pub fn sign(signing_key: &[u8; 32], string_to_sign: &str) -> String {
    hex(&hmac(signing_key, string_to_sign.as_bytes()))
}

/// Constant-time comparison (the MAC crate's `verify_slice`), so the time a refusal takes
/// says nothing about how much of a guessed signature was right.
fn signature_matches(signing_key: &[u8; 32], string_to_sign: &str, provided: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(signing_key).expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(provided).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 64-digit hex signature as its 32 bytes; anything else cannot match.
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16);
    s.as_bytes().chunks(2).map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8)).collect()
}

/// `20150830T123600Z` → Unix seconds.
pub fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let part = s.get(range)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year as i64, month as i64, day as i64);
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64;
    u64::try_from(secs).ok()
}

/// Unix seconds → `20150830T123600Z`.
pub fn format_amz_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderName, HeaderValue};

    use super::*;

    // The AWS SigV4 test suite's credentials, time and scope.
    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";
    const SCOPE: &str = "20150830/us-east-1/service/aws4_request";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    /// SHA-256 of the suite's form body `Param1=value1`.
    const FORM_SHA256: &str = "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        map
    }

    /// Signs like the suite does: every header given, in header form.
    fn suite_signature(
        method: &str,
        path: &str,
        query: &str,
        extra: &[(&str, &str)],
        payload: &str,
    ) -> String {
        let mut pairs = vec![("host", "example.amazonaws.com"), ("x-amz-date", DATE)];
        pairs.extend_from_slice(extra);
        let map = headers(&pairs);
        let mut names: Vec<String> = map.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let creq = canonical_request(
            method,
            path,
            &canonical_query(&split_query(query), false),
            &map,
            &names,
            payload,
        );
        let key = signing_key(SECRET, "20150830", "us-east-1", "service");
        sign(&key, &string_to_sign(DATE, SCOPE, &creq))
    }

    #[test]
    fn suite_header_vectors() {
        assert_eq!(
            suite_signature("GET", "/", "", &[], EMPTY_SHA256),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "get-vanilla"
        );
        assert_eq!(
            suite_signature("GET", "/", "Param2=value2&Param1=value1", &[], EMPTY_SHA256),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            "get-vanilla-query-order-key-case"
        );
        assert_eq!(
            suite_signature("POST", "/", "", &[], EMPTY_SHA256),
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            "post-vanilla"
        );
        assert_eq!(
            suite_signature("POST", "/", "", &[("my-header1", "VALUE1")], EMPTY_SHA256),
            "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
            "post-header-value-case"
        );
        assert_eq!(
            suite_signature(
                "POST",
                "/",
                "",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("content-length", "13"),
                    ("x-amz-content-sha256", FORM_SHA256),
                ],
                FORM_SHA256
            ),
            "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
            "post-x-www-form-urlencoded"
        );
    }

    #[test]
    fn suite_canonical_request_for_get_vanilla() {
        let map = headers(&[("host", "example.amazonaws.com"), ("x-amz-date", DATE)]);
        let creq = canonical_request("GET", "/", "", &map, &["host", "x-amz-date"], EMPTY_SHA256);
        let expected = format!(
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:{DATE}\n\nhost;x-amz-date\n{EMPTY_SHA256}"
        );
        assert_eq!(String::from_utf8(creq).expect("utf8"), expected);
    }

    /// The suite's presigned vectors: the signing parameters are in the query, only `host` is
    /// signed, and the verifier (not just the signer) must accept them.
    #[test]
    fn suite_presigned_vectors_verify() {
        let credentials: Credentials = [(AKID.to_owned(), SECRET.to_owned())].into_iter().collect();
        let auth = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600";
        /// name, method, query before the signing parameters, headers besides host, body,
        /// expected signature.
        type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8], &'a str);
        let cases: [Case<'_>; 3] = [
            (
                "get-vanilla",
                "GET",
                "",
                &[],
                b"",
                "e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d",
            ),
            (
                "get-vanilla-query-order-key-case",
                "GET",
                "Param2=value2&Param1=value1&",
                &[],
                b"",
                "86012e2c9ad4d77369f5d81c11f75158aae4f895a085212cc6d3f923d300bed5",
            ),
            (
                "post-x-www-form-urlencoded",
                "POST",
                "",
                &[("content-type", "application/x-www-form-urlencoded"), ("content-length", "13")],
                b"Param1=value1",
                "89a40deed0f26f9461242825a082d2222717248abc7ab41f552ad84a94ad46e9",
            ),
        ];
        for (name, method, extra_query, extra_headers, body, signature) in cases {
            let mut pairs = vec![("host", "example.amazonaws.com")];
            pairs.extend_from_slice(extra_headers);
            let map = headers(&pairs);
            let mut signed: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
            signed.sort();
            let query = format!(
                "{extra_query}{auth}&X-Amz-SignedHeaders={}&X-Amz-Signature={signature}",
                signed.join("%3B")
            );
            let req = SignedRequest { method, path: "/", query: &query, headers: &map, body };
            let now = parse_amz_date(DATE).expect("date") + 60;
            // The suite's region is us-east-1 but its service is "service", which this port does
            // not serve: verification gets as far as the scope check.
            let err = verify(&req, &credentials, "us-east-1", now).expect_err(name);
            assert!(err.message.contains("correct service"), "{name}: {err}");
            // With the service check out of the way, the signature itself must match.
            let query_params = split_query(&query);
            let sig = parse_presigned(&query_params).expect(name);
            let creq = canonical_request(
                method,
                "/",
                &canonical_query(&query_params, true),
                &map,
                &signed,
                &hex(&Sha256::digest(body)),
            );
            let key = signing_key(SECRET, "20150830", "us-east-1", "service");
            assert_eq!(sign(&key, &string_to_sign(DATE, SCOPE, &creq)), signature, "{name}");
            assert!(signature_matches(
                &key,
                &string_to_sign(DATE, SCOPE, &creq),
                &decode_hex(&sig.signature).expect("hex")
            ));
        }
    }

    #[test]
    fn uri_encoding_rules() {
        assert_eq!(uri_encode(b"-_.~AZaz09", false), "-_.~AZaz09");
        assert_eq!(uri_encode(b"a b+c/d=e*", false), "a%20b%2Bc%2Fd%3De%2A");
        assert_eq!(uri_encode("ሴ".as_bytes(), false), "%E1%88%B4");
        assert_eq!(uri_encode(b"/a/b", true), "/a/b");
        // The path is signed encoded twice: the client's %20 becomes %2520.
        assert_eq!(canonical_uri("/my%20queue"), "/my%2520queue");
        assert_eq!(canonical_uri("/000000000000/orders"), "/000000000000/orders");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("//example//"), "/example/");
        assert_eq!(canonical_uri("/example1/example2/../.."), "/");
        assert_eq!(canonical_uri("/./a/./b/"), "/a/b/");
    }

    #[test]
    fn query_is_decoded_reencoded_and_sorted() {
        let q = split_query("b=2&a=z&a=y&c=%7e%20x+y&d");
        assert_eq!(canonical_query(&q, false), "a=y&a=z&b=2&c=~%20x%2By&d=");
        let q = split_query("X-Amz-Signature=abc&A=1");
        assert_eq!(canonical_query(&q, true), "A=1");
        assert_eq!(canonical_query(&q, false), "A=1&X-Amz-Signature=abc");
    }

    #[test]
    fn header_values_are_trimmed_and_joined() {
        let map = headers(&[("host", "h"), ("my-header", "  a   b \t c  "), ("my-header", "second")]);
        let creq = canonical_request("GET", "/", "", &map, &["host", "my-header", "missing"], "x");
        let text = String::from_utf8(creq).expect("utf8");
        assert!(text.contains("\nmy-header:a b c,second\nmissing:\n\nhost;my-header;missing\nx"), "{text}");
    }

    #[test]
    fn dates_round_trip() {
        let t = parse_amz_date(DATE).expect("date");
        assert_eq!(t, 1_440_938_160);
        assert_eq!(format_amz_date(t), DATE);
        assert_eq!(format_amz_date(0), "19700101T000000Z");
        assert_eq!(
            parse_amz_date("20240229T235959Z").map(format_amz_date).as_deref(),
            Some("20240229T235959Z")
        );
        for bad in ["2015-08-30T12:36:00Z", "20150830T123600", "20151330T123600Z", "2015083xT123600Z", ""] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn hex_decoding_is_strict() {
        assert_eq!(decode_hex(&"ab".repeat(32)).map(|v| v.len()), Some(32));
        assert_eq!(decode_hex(&"AB".repeat(32)).map(|v| v[0]), Some(0xab));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex(&"zz".repeat(32)), None);
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let c: Credentials = [("AKID1".to_owned(), "very-secret".to_owned())].into_iter().collect();
        let shown = format!("{c:?}");
        assert!(shown.contains("AKID1") && !shown.contains("very-secret"), "{shown}");
    }

    // ---- the verifier on requests signed here, at a chosen time --------------------------

    const KEY_ID: &str = "AKIAWHARFTEST";
    const KEY_SECRET: &str = "wharf/test+secret";
    const REGION: &str = "us-east-1";

    fn creds() -> Credentials {
        [(KEY_ID.to_owned(), KEY_SECRET.to_owned())].into_iter().collect()
    }

    /// A Query-protocol POST signed in header form at `at` with `secret`.
    fn signed_post(at: u64, key_id: &str, secret: &str, body: &[u8], service: &str) -> HeaderMap {
        let amz_date = format_amz_date(at);
        let mut map = headers(&[
            ("host", "127.0.0.1:9324"),
            ("content-type", "application/x-www-form-urlencoded; charset=utf-8"),
            ("x-amz-date", &amz_date),
        ]);
        let names = ["content-type", "host", "x-amz-date"];
        let creq = canonical_request("POST", "/", "", &map, &names, &hex(&Sha256::digest(body)));
        let scope = format!("{}/{REGION}/{service}/aws4_request", &amz_date[..8]);
        let key = signing_key(secret, &amz_date[..8], REGION, service);
        let signature = sign(&key, &string_to_sign(&amz_date, &scope, &creq));
        let auth = format!(
            "{ALGORITHM} Credential={key_id}/{scope}, SignedHeaders={}, Signature={signature}",
            names.join(";")
        );
        map.insert("authorization", HeaderValue::from_str(&auth).expect("auth"));
        map
    }

    fn check(map: &HeaderMap, body: &[u8], now: u64) -> Result<String, SqsError> {
        let req = SignedRequest { method: "POST", path: "/", query: "", headers: map, body };
        verify(&req, &creds(), REGION, now)
    }

    const NOW: u64 = 1_700_000_000;
    const BODY: &[u8] = b"Action=ListQueues&Version=2012-11-05";

    #[test]
    fn header_form_accepts_the_right_key_for_sqs_and_sns() {
        let ok = signed_post(NOW, KEY_ID, KEY_SECRET, BODY, "sqs");
        assert_eq!(check(&ok, BODY, NOW).as_deref(), Ok(KEY_ID));
        let sns = signed_post(NOW, KEY_ID, KEY_SECRET, BODY, "sns");
        assert_eq!(check(&sns, BODY, NOW).as_deref(), Ok(KEY_ID));
    }

    #[test]
    fn header_form_refusals() {
        let code = |r: Result<String, SqsError>| r.expect_err("refused").code;
        assert_eq!(code(check(&HeaderMap::new(), BODY, NOW)), ErrorCode::MissingAuthenticationToken);
        let wrong_secret = signed_post(NOW, KEY_ID, "not-the-secret", BODY, "sqs");
        assert_eq!(code(check(&wrong_secret, BODY, NOW)), ErrorCode::SignatureDoesNotMatch);
        let unknown = signed_post(NOW, "AKIANOBODY", KEY_SECRET, BODY, "sqs");
        assert_eq!(code(check(&unknown, BODY, NOW)), ErrorCode::InvalidClientTokenId);
        let ok = signed_post(NOW, KEY_ID, KEY_SECRET, BODY, "sqs");
        assert_eq!(
            code(check(&ok, b"Action=DeleteQueue&Version=2012-11-05", NOW)),
            ErrorCode::SignatureDoesNotMatch
        );
        let s3 = signed_post(NOW, KEY_ID, KEY_SECRET, BODY, "s3");
        assert_eq!(code(check(&s3, BODY, NOW)), ErrorCode::SignatureDoesNotMatch);

        // 15 minutes either way is fine; a second more is not.
        let old = signed_post(NOW - MAX_CLOCK_SKEW_SECS, KEY_ID, KEY_SECRET, BODY, "sqs");
        assert!(check(&old, BODY, NOW).is_ok());
        let err = check(&old, BODY, NOW + 1).expect_err("expired");
        assert_eq!(err.code, ErrorCode::SignatureDoesNotMatch);
        assert!(err.message.starts_with("Signature expired: "), "{err}");
        let future = signed_post(NOW + MAX_CLOCK_SKEW_SECS + 1, KEY_ID, KEY_SECRET, BODY, "sqs");
        let err = check(&future, BODY, NOW).expect_err("future");
        assert!(err.message.starts_with("Signature not yet current"), "{err}");

        // A signature that is not 64 hex digits is a mismatch, not a crash.
        let mut bad = ok.clone();
        let auth = ok["authorization"].to_str().expect("ascii");
        let cut = auth.rsplit_once("Signature=").expect("sig").0.to_owned() + "Signature=xyz";
        bad.insert("authorization", HeaderValue::from_str(&cut).expect("value"));
        assert_eq!(code(check(&bad, BODY, NOW)), ErrorCode::SignatureDoesNotMatch);
    }

    #[test]
    fn malformed_authorization_is_incomplete() {
        for auth in [
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 Credential=AKIAWHARFTEST/20231114/us-east-1/sqs/aws4_request",
            "AWS4-HMAC-SHA256 Credential=AKIAWHARFTEST/20231114, SignedHeaders=host, Signature=00",
            "AWS AKIAWHARFTEST:c2lnbmF0dXJl",
            "AWS4-HMAC-SHA256 Credential",
        ] {
            let mut map = headers(&[("host", "h"), ("x-amz-date", &format_amz_date(NOW))]);
            map.insert("authorization", HeaderValue::from_str(auth).expect("value"));
            let err = check(&map, BODY, NOW).expect_err(auth);
            assert_eq!(err.code, ErrorCode::IncompleteSignature, "{auth}: {err}");
        }
        // No X-Amz-Date.
        let mut map = signed_post(NOW, KEY_ID, KEY_SECRET, BODY, "sqs");
        map.remove("x-amz-date");
        assert_eq!(check(&map, BODY, NOW).expect_err("no date").code, ErrorCode::IncompleteSignature);
    }

    fn presigned_query(at: u64, expires: u64, payload: &str) -> String {
        let amz_date = format_amz_date(at);
        let scope = format!("{}/{REGION}/sqs/aws4_request", &amz_date[..8]);
        let query = format!(
            "Action=ListQueues&Version=2012-11-05&X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={}\
             &X-Amz-Date={amz_date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host",
            uri_encode(format!("{KEY_ID}/{scope}").as_bytes(), false)
        );
        let map = headers(&[("host", "127.0.0.1:9324")]);
        let creq = canonical_request(
            "GET",
            "/",
            &canonical_query(&split_query(&query), true),
            &map,
            &["host"],
            payload,
        );
        let key = signing_key(KEY_SECRET, &amz_date[..8], REGION, "sqs");
        format!("{query}&X-Amz-Signature={}", sign(&key, &string_to_sign(&amz_date, &scope, &creq)))
    }

    fn check_get(query: &str, now: u64) -> Result<String, SqsError> {
        let map = headers(&[("host", "127.0.0.1:9324")]);
        let req = SignedRequest { method: "GET", path: "/", query, headers: &map, body: b"" };
        verify(&req, &creds(), REGION, now)
    }

    #[test]
    fn presigned_urls() {
        let url = presigned_query(NOW, 300, EMPTY_SHA256);
        assert_eq!(check_get(&url, NOW + 300).as_deref(), Ok(KEY_ID));
        let err = check_get(&url, NOW + 301).expect_err("expired");
        assert_eq!(err.code, ErrorCode::RequestExpired);
        // UNSIGNED-PAYLOAD, as S3-style presigners send it.
        assert!(check_get(&presigned_query(NOW, 300, UNSIGNED_PAYLOAD), NOW).is_ok());
        // Any change to a signed parameter breaks it.
        let tampered = url.replace("ListQueues", "PurgeQueue");
        assert_eq!(check_get(&tampered, NOW).expect_err("tampered").code, ErrorCode::SignatureDoesNotMatch);
        // Missing or malformed signing parameters.
        let no_expires = url.replace("&X-Amz-Expires=300", "");
        assert_eq!(check_get(&no_expires, NOW).expect_err("no expires").code, ErrorCode::IncompleteSignature);
        let too_long = presigned_query(NOW, MAX_PRESIGNED_EXPIRES_SECS + 1, EMPTY_SHA256);
        assert_eq!(check_get(&too_long, NOW).expect_err("too long").code, ErrorCode::IncompleteSignature);
        // Both forms at once is refused.
        let map = signed_post(NOW, KEY_ID, KEY_SECRET, b"", "sqs");
        let req = SignedRequest { method: "GET", path: "/", query: &url, headers: &map, body: b"" };
        assert_eq!(
            verify(&req, &creds(), REGION, NOW).expect_err("both").code,
            ErrorCode::IncompleteSignature
        );
    }
}
