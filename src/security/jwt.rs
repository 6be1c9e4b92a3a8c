//! JSON Web Tokens from an identity provider: HS256 (shared secret) or
//! RS256 (the provider's public key), checked with the crypto library
//! rustls uses. The algorithm is the configured one, never the token's
//! own choice (`alg: none` or a switched algorithm is refused).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;

use crate::config::JwtConfig;

use super::{Principal, SecurityError};

/// A configured verifier.
pub enum JwtKey {
    Hs256(Box<aws_lc_rs::hmac::Key>),
    Rs256(Vec<u8>),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hs256(_) => "HS256",
            Self::Rs256(_) => "RS256",
        })
    }
}

/// The verifier the config describes (`None`: JWTs are not accepted).
pub fn key(config: &JwtConfig) -> Result<Option<JwtKey>, SecurityError> {
    let file = || -> Result<Vec<u8>, SecurityError> {
        std::fs::read(&config.key_file).map_err(|e| {
            SecurityError::Config(format!("security.jwt.key_file {}: {e}", config.key_file))
        })
    };
    match config.algorithm.as_str() {
        "" => Ok(None),
        "HS256" => {
            let secret = if config.secret.expose().is_empty() {
                file()?
            } else {
                config.secret.expose().as_bytes().to_vec()
            };
            let secret: Vec<u8> = secret.trim_ascii().to_vec();
            if secret.len() < 32 {
                return Err(SecurityError::Config(
                    "security.jwt: an HS256 secret needs at least 32 bytes".into(),
                ));
            }
            Ok(Some(JwtKey::Hs256(Box::new(aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                &secret,
            )))))
        }
        "RS256" => {
            let pem = file()?;
            let der = SubjectPublicKeyInfoDer::from_pem_slice(&pem).map_err(|e| {
                SecurityError::Config(format!(
                    "security.jwt.key_file {}: not a PEM public key ({e})",
                    config.key_file
                ))
            })?;
            Ok(Some(JwtKey::Rs256(der.as_ref().to_vec())))
        }
        other => Err(SecurityError::Config(format!(
            "security.jwt.algorithm {other:?}: use HS256 or RS256"
        ))),
    }
}

/// Does `token` look like a JWT (three dot-separated parts)?
pub fn looks_like(token: &str) -> bool {
    token.split('.').count() == 3
}

fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(s)) => s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// Why a JWT was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtRejected {
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    Claims(String),
}

impl JwtRejected {
    pub fn reason(&self) -> String {
        match self {
            Self::Malformed => "the JWT is malformed".into(),
            Self::BadSignature => "the JWT's signature does not verify".into(),
            Self::Expired => "the JWT has expired".into(),
            Self::NotYetValid => "the JWT is not valid yet".into(),
            Self::Claims(m) => format!("the JWT's claims: {m}"),
        }
    }
}

/// The principal of a JWT verified with `key` at `now` (seconds).
pub fn verify(
    key: &JwtKey,
    config: &JwtConfig,
    token: &str,
    now: i64,
) -> Result<Principal, JwtRejected> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtRejected::Malformed);
    };
    let decode = |x: &str| {
        URL_SAFE_NO_PAD
            .decode(x)
            .map_err(|_| JwtRejected::Malformed)
    };
    let header: serde_json::Value =
        serde_json::from_slice(&decode(h)?).map_err(|_| JwtRejected::Malformed)?;
    let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("");
    let signed = &token[..h.len() + 1 + p.len()];
    let signature = decode(s)?;
    match key {
        JwtKey::Hs256(k) if alg == "HS256" => {
            aws_lc_rs::hmac::verify(k, signed.as_bytes(), &signature)
                .map_err(|_| JwtRejected::BadSignature)?;
        }
        JwtKey::Rs256(der) if alg == "RS256" => {
            aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                der,
            )
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| JwtRejected::BadSignature)?;
        }
        _ => return Err(JwtRejected::BadSignature),
    }
    let claims: serde_json::Value =
        serde_json::from_slice(&decode(p)?).map_err(|_| JwtRejected::Malformed)?;
    let exp = claims
        .get("exp")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| JwtRejected::Claims("exp is required".into()))?;
    if exp <= now {
        return Err(JwtRejected::Expired);
    }
    if claims
        .get("nbf")
        .and_then(|v| v.as_i64())
        .is_some_and(|nbf| nbf > now)
    {
        return Err(JwtRejected::NotYetValid);
    }
    if !config.issuer.is_empty()
        && claims.get("iss").and_then(|v| v.as_str()) != Some(&config.issuer)
    {
        return Err(JwtRejected::Claims(
            "iss is not the configured issuer".into(),
        ));
    }
    if !config.audience.is_empty() {
        // A string is one audience, an array several (never split text).
        let named = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => a == &config.audience,
            Some(serde_json::Value::Array(all)) => all
                .iter()
                .any(|a| a.as_str() == Some(config.audience.as_str())),
            _ => false,
        };
        if !named {
            return Err(JwtRejected::Claims("aud does not name this service".into()));
        }
    }
    let c = &config.claims;
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let user =
        text(&c.user).ok_or_else(|| JwtRejected::Claims(format!("{} is required", c.user)))?;
    let role =
        text(&c.role).ok_or_else(|| JwtRejected::Claims(format!("{} is required", c.role)))?;
    Ok(Principal {
        user,
        role,
        teams: strings(claims.get(&c.teams)),
        regions: strings(claims.get(&c.regions)),
        agent_id: text(&c.agent_id),
        via: "jwt".into(),
    })
}

/// Sign claims with an HS256 secret (tests and `custlake demo`).
pub fn sign_hs256(secret: &[u8], claims: &serde_json::Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{h}.{p}");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let sig = aws_lc_rs::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn config() -> JwtConfig {
        JwtConfig {
            algorithm: "HS256".into(),
            secret: serde_json::from_value(serde_json::json!(SECRET)).unwrap(),
            ..JwtConfig::default()
        }
    }

    #[test]
    fn hs256_claims_become_a_principal() {
        let c = config();
        let k = key(&c).unwrap().unwrap();
        let t = sign_hs256(
            SECRET.as_bytes(),
            &serde_json::json!({"sub":"li","role":"steward","teams":["north","east"],"exp":2000}),
        );
        let p = verify(&k, &c, &t, 1000).unwrap();
        assert_eq!(p.user, "li");
        assert_eq!(p.teams, vec!["north", "east"]);
        assert_eq!(verify(&k, &c, &t, 2000), Err(JwtRejected::Expired));
        let other = sign_hs256(
            b"another-secret-another-secret-xx",
            &serde_json::json!({"sub":"li","role":"admin","exp":2000}),
        );
        assert_eq!(verify(&k, &c, &other, 1000), Err(JwtRejected::BadSignature));
        // alg none: header swapped, signature dropped.
        let none_h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{none_h}.{}.", parts[1]);
        assert!(verify(&k, &c, &forged, 1000).is_err());
        let no_exp = sign_hs256(
            SECRET.as_bytes(),
            &serde_json::json!({"sub":"li","role":"admin"}),
        );
        assert!(matches!(
            verify(&k, &c, &no_exp, 1000),
            Err(JwtRejected::Claims(_))
        ));
    }
}
