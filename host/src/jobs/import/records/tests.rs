use super::*;
use crate::jobs::import::export::custom_password_hash;
use crate::mfa::sealed::KeyRing;
use crate::model::{FactorKind, FactorProvider, FactorStatus};
#[test]
fn every_exported_hash_is_imported_as_one_the_same_passwords_match() {
    use crate::state::passwords::{legacy_formats::*, verify};
    use sha2::Digest as _;
    let stored = [
        bcrypt("pw-right", "2y", [5; 16]),
        argon2id("pw-right", &[6; 16]),
        django_pbkdf2("pw-right", "salty", 1000),
        salted_sha1("pw-right", "ab"),
        format!("md5$xy${}", hex::encode(md5::Md5::digest("xypw-right"))),
    ];
    for hash in stored {
        let custom = custom_password_hash(&hash).unwrap();
        let imported = stored_hash(&custom).unwrap();
        assert_eq!(verify(&imported, "pw-right"), Ok(true), "{imported}");
        assert_eq!(verify(&imported, "pw-wrong"), Ok(false), "{imported}");
    }
}

#[test]
fn what_the_schema_does_not_allow_is_refused_with_auth0s_codes() {
    let refused = |user: Value| -> Vec<(&'static str, String)> {
        check(&user, false, &[], &FactorImport::default(), 0)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.code, e.path))
            .collect()
    };
    let hash = json!({"value": "$2b$10$C9hB01.YxRSTcn/ZOOo4j.TW7xCKKFKBSF.C7E0xiUwumqIDqWUXG"});
    assert_eq!(
        refused(json!({"email": "a@example.org", "nickname_typo": "x"})),
        [("OBJECT_ADDITIONAL_PROPERTIES", "nickname_typo".to_owned())]
    );
    assert_eq!(
        refused(json!({"email": "a@example.org",
            "custom_password_hash": {"algorithm": "bcrypt", "hash": hash, "rounds": 10}})),
        [(
            "OBJECT_ADDITIONAL_PROPERTIES",
            "custom_password_hash.rounds".to_owned()
        )]
    );
    assert_eq!(
        refused(json!({"email": "a@example.org",
            "custom_password_hash": {"algorithm": "bcrypt", "hash": hash,
                                     "salt": {"value": "pepper"}}})),
        [("NOT_PASSED", "custom_password_hash.salt".to_owned())]
    );
    // A salt in an encoding the value is not in: that record's error, not a user
    // stored with the wrong salt.
    assert_eq!(
        refused(json!({"email": "a@example.org",
            "custom_password_hash": {"algorithm": "md5",
                "hash": {"value": "00".repeat(16), "encoding": "hex"},
                "salt": {"value": "not-hex", "encoding": "hex"}}})),
        [("FORMAT", "custom_password_hash.salt.value".to_owned())]
    );
    assert_eq!(
        refused(
            json!({"email": "a@example.org", "password_hash": hash["value"],
            "custom_password_hash": {"algorithm": "bcrypt", "hash": hash}})
        ),
        [("NOT_PASSED", "custom_password_hash".to_owned())]
    );
    // Names, picture and blocked are in the schema: taken.
    assert!(
        check(
            &json!({"email": "a@example.org", "given_name": "A", "blocked": false}),
            false,
            &[],
            &FactorImport::default(),
            0
        )
        .is_ok()
    );
    // A TOTP enrolment is in the schema, and this directory has no such factor:
    // the record fails rather than the user arriving without it.
    assert_eq!(
        refused(json!({"email": "a@example.org",
            "mfa_factors": [{"totp": {"secret": "JBTWY3DPEHPK3PNP"}}]})),
        [("ENUM_MISMATCH", "mfa_factors.0.totp".to_owned())]
    );
}

fn phone_import() -> FactorImport {
    FactorImport {
        keys: Some(std::sync::Arc::new(
            KeyRing::parse(&format!(
                "k1:{}",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32],)
            ))
            .unwrap(),
        )),
        regions: vec!["US".into(), "CA".into()],
        ..FactorImport::default()
    }
}

fn with_factors(factors: Value, import: &FactorImport) -> Result<ImportRecord, Vec<RecordError>> {
    check(
        &json!({"email": "p@example.org", "mfa_factors": factors}),
        false,
        &[],
        import,
        5,
    )
}

#[test]
fn an_imported_phone_is_sealed_as_enrolment_seals_it() {
    let import = phone_import();
    let with = |factors: Value| with_factors(factors, &import);
    let record = with(json!([{"phone": {"value": "+14155552671"}}])).unwrap();
    let [factor] = &record.factors[..] else {
        panic!("{:?}", record.factors)
    };
    assert_eq!(
        (
            factor.provider,
            factor.status,
            factor.kind,
            factor.user_id.as_str()
        ),
        (
            FactorProvider::Verify,
            FactorStatus::Active,
            FactorKind::Sms,
            record.id.as_str()
        )
    );
    let keys = import.keys.as_ref().unwrap();
    let sealed = factor.phone.as_ref().unwrap();
    assert_eq!(
        keys.open(sealed, &record.id, &factor.id)
            .unwrap()
            .to_string(),
        "+14155552671"
    );
    assert!(factor.legacy_provider_user_id.is_none());
}

#[test]
fn an_imported_factor_the_directory_cannot_honour_fails_its_record() {
    let import = phone_import();
    let with = |factors: Value| with_factors(factors, &import);
    // Refused, each as the record's error, and never echoing the number.
    for (factors, code, path) in [
        (
            json!([{"phone": {"value": "+1 303 555 0142"}}]),
            "PATTERN",
            "mfa_factors.0.phone.value",
        ),
        (
            json!([{"phone": {"value": "3035550142"}}]),
            "PATTERN",
            "mfa_factors.0.phone.value",
        ),
        // Valid digits but no such number: not stored as something else.
        (
            json!([{"phone": {"value": "+11115552671"}}]),
            "FORMAT",
            "mfa_factors.0.phone.value",
        ),
        // A number enrolment would not text (toll free), or outside the regions.
        (
            json!([{"phone": {"value": "+18005552671"}}]),
            "FORMAT",
            "mfa_factors.0.phone.value",
        ),
        (
            json!([{"phone": {"value": "+442079462671"}}]),
            "FORMAT",
            "mfa_factors.0.phone.value",
        ),
        (
            json!([{"phone": {"value": 14155552671u64}}]),
            "INVALID_TYPE",
            "mfa_factors.0.phone.value",
        ),
        (
            json!([{"phone": {}}]),
            "OBJECT_REQUIRED",
            "mfa_factors.0.phone.value",
        ),
        (
            json!([{"phone": {"value": "+14155552671", "label": "x"}}]),
            "OBJECT_ADDITIONAL_PROPERTIES",
            "mfa_factors.0.phone.label",
        ),
        (
            json!([{"email": {"value": "p@example.org"}}]),
            "ENUM_MISMATCH",
            "mfa_factors.0.email",
        ),
        (
            json!([{"phone": {"value": "+14155552671"}, "email": {"value": "p@example.org"}}]),
            "OBJECT_PROPERTIES_MAXIMUM",
            "mfa_factors.0",
        ),
        (
            json!([{"phone": {"value": "+14155552671"}}, {"phone": {"value": "+14155552672"}}]),
            "CONFLICT",
            "mfa_factors.1.phone",
        ),
        (
            json!([{"sms": {"value": "+14155552671"}}]),
            "OBJECT_ADDITIONAL_PROPERTIES",
            "mfa_factors.0.sms",
        ),
        (json!([]), "ARRAY_LENGTH_SHORT", "mfa_factors"),
        (
            json!({"phone": {"value": "+14155552671"}}),
            "INVALID_TYPE",
            "mfa_factors",
        ),
    ] {
        let errors = with(factors.clone()).unwrap_err();
        assert!(
            errors.iter().any(|e| e.code == code && e.path == path),
            "{factors}: {errors:?}"
        );
        for e in &errors {
            assert!(!e.message.contains("5552671"), "{e:?}");
        }
    }
    // Without the new provider's keys a phone cannot be kept: refused, not dropped.
    let errors = check(
        &json!({"email": "p@example.org", "mfa_factors": [{"phone": {"value": "+14155552671"}}]}),
        false,
        &[],
        &FactorImport {
            keys: None,
            ..import.clone()
        },
        5,
    )
    .unwrap_err();
    assert_eq!(errors[0].code, "ENUM_MISMATCH", "{errors:?}");
}

#[test]
fn a_shown_record_keeps_its_shape_without_its_secrets() {
    let shown = redacted(&json!({
        "email": "a@example.org",
        "phone_number": "+15551234567",
        "custom_password_hash": {"algorithm": "hmac",
            "hash": {"value": "abc", "digest": "sha1", "key": {"value": "k"}},
            "salt": {"value": "s", "position": "suffix"}},
        "mfa_factors": [{"totp": {"secret": "JBTWY3DPEHPK3PNP"}}],
    }));
    assert_eq!(shown["custom_password_hash"]["algorithm"], "hmac");
    assert_eq!(shown["custom_password_hash"]["salt"]["position"], "suffix");
    for secret in ["abc", "\"k\"", "\"s\"", "JBTWY", "5551234567"] {
        assert!(!shown.to_string().contains(secret), "{secret} in {shown}");
    }
    assert_eq!(redacted(&json!(42)), json!({}));
    assert_eq!(redacted(&json!("$2b$10$...")), json!({}));
    // Secrets given where an object belongs (refused as the wrong type), and a
    // property outside the schema, are hidden whole.
    let shown = redacted(&json!({
        "email": "a@example.org",
        "password": "hunter2-plain",
        "custom_password_hash": {"algorithm": "hmac",
            "hash": {"value": "abc", "digest": "sha1", "key": "pepper-secret"},
            "salt": "salt-secret"},
    }));
    for secret in ["hunter2-plain", "pepper-secret", "salt-secret"] {
        assert!(!shown.to_string().contains(secret), "{secret} in {shown}");
    }
    // Properties the schema does not know, at any depth of the custom hash, too;
    // its settings stay shown.
    let shown = redacted(
        &json!({"custom_password_hash": {"algorithm": "hmac", "plain": "p-1",
        "hash": {"value": "abc", "encoding": "hex", "backup": "p-2", "key": {"value": "k", "old": "p-3"}},
        "salt": {"value": "s", "pepper": "p-4"}, "password": {"encoding": "utf8", "value": "p-5"}}}),
    );
    for secret in ["p-1", "p-2", "p-3", "p-4", "p-5"] {
        assert!(!shown.to_string().contains(secret), "{secret} in {shown}");
    }
    assert_eq!(shown["custom_password_hash"]["hash"]["encoding"], "hex");
    assert_eq!(
        shown["custom_password_hash"]["password"]["encoding"],
        "utf8"
    );
    let shown =
        redacted(&json!({"custom_password_hash": {"algorithm": "bcrypt", "hash": "$2b$10$abc"}}));
    assert!(!shown.to_string().contains("$2b$"), "{shown}");
    assert_eq!(shown["email"], json!(null));
    // A factor given as a bare value (refused as the wrong type) is hidden whole.
    let shown = redacted(&json!({
        "mfa_factors": ["+14155552676", ["+14155552677"], 14155552678_u64],
    }));
    assert_eq!(shown["mfa_factors"], json!(["*****", "*****", "*****"]));
}

#[test]
fn the_protected_keys_follow_the_flags_the_rules_name() {
    let config = crate::config::PipelineConfig::parse(
        "[effects]\nprotected_app_metadata = [\"tier\"]\n\
         [[rule]]\nname = \"skip\"\ncomponent = \"skip.wasm\"\ngrants = [\"config\"]\n\
         [rule.config]\nbulk_flag = \"importedInBulk\"\nreset_flag = \"mustReset\"\n",
        std::path::Path::new("."),
    )
    .unwrap();
    let keys = protected_keys(&config);
    for key in [
        "importedInBulk",
        "mustReset",
        "tier",
        "migrated",
        "bulkImported",
        "forcePasswordReset",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} not in {keys:?}");
    }
}

#[test]
fn a_bad_record_lists_each_problem_with_auth0_codes() {
    let errors = check(
        &json!({"email": "nope", "email_verified": "yes", "app_metadata": {"email": 1},
                "custom_password_hash": {"algorithm": "scrypt", "hash": {"value": "x"}}}),
        false,
        &[],
        &FactorImport::default(),
        0,
    )
    .unwrap_err();
    let codes: Vec<&str> = errors.iter().map(|e| e.code).collect();
    for code in ["FORMAT", "INVALID_TYPE", "NOT_PASSED", "ENUM_MISMATCH"] {
        assert!(codes.contains(&code), "{codes:?}");
    }
    assert_eq!(
        check(&json!([1]), false, &[], &FactorImport::default(), 0).unwrap_err()[0].code,
        "INVALID_TYPE"
    );
}
