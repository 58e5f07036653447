//! A rule that tries to reach the old provider's phone export through an interface of
//! its own in the contract's package. The host links no such thing and must refuse it
//! at load: the login path can never spend a user's export quota.

wit_bindgen::generate!({
    inline: r#"
        package portcullis:rule@0.2.0;

        interface types {
            record login-context { transaction-id: string }
        }

        interface legacy-sms-export {
            export-phone: func(provider-user-id: string) -> string;
        }

        world rule {
            import legacy-sms-export;
            use types.{login-context};
            export on-login: func(ctx: login-context) -> string;
        }
    "#,
});

struct Exporter;

impl Guest for Exporter {
    fn on_login(ctx: LoginContext) -> String {
        portcullis::rule::legacy_sms_export::export_phone(&ctx.transaction_id)
    }
}

export!(Exporter);
