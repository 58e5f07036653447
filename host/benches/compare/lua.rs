//! The OpenResty model: the four rules in Lua 5.4 (`rules/lua/rules.lua`, the same
//! logic as `rules/js/rules.js`), one Lua state reused for every login, the rules'
//! chunk compiled once and run in a fresh environment table per login (the login's
//! globals die with it; the state, its compiled code and its heap do not, so logins
//! are not isolated from each other as a fresh sandbox isolates them). Capability
//! answers come from the recordings' in-memory services, as for the native rules.
//! A state is single-threaded: each thread that runs this engine makes its own, as
//! OpenResty has one per worker process.

use std::collections::BTreeMap;
use std::path::Path;

use mlua::{Function, Lua, LuaSerdeExt, Table, Value as LuaValue};
use portcullis::LoginAttempt;
use portcullis::model::Services;
use portcullis::replay::record::Expectation;
use serde_json::Value;

use super::{Engine, RULE_NAMES, expectation_from_script};

/// The login as the rules see it (the fields `rules/js` reads), kept as Rust data and
/// copied into a new Lua table per login, as a gateway copies a request in.
struct LoginFields {
    transaction_id: String,
    time_ms: i64,
    email: String,
    has_password: bool,
    new_user_id: String,
    /// id, email, email_verified, app_metadata, user_metadata
    user: Option<(String, Option<String>, bool, String, String)>,
}

pub struct LuaEngine {
    lua: Lua,
    /// The rules' chunk, compiled once; each login sets its `_ENV`.
    chunk: Function,
    /// `__index` to the shared globals, for every login's environment.
    env_meta: Table,
    host: Table,
    login: LoginFields,
}

fn lua_error(e: mlua::Error) -> String {
    format!("lua: {e}")
}

impl LuaEngine {
    /// A state with the rules loaded, answering from `services`.
    pub fn new(
        root: &Path,
        login: &LoginAttempt,
        services: &Services,
        configs: &[BTreeMap<String, String>],
    ) -> Result<Self, String> {
        let path = root.join("rules/lua/rules.lua");
        let source = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let lua = Lua::new();
        let chunk = lua
            .load(source)
            .set_name("=rules.lua")
            .into_function()
            .map_err(lua_error)?;
        // What a login's environment sees besides its own globals: the standard
        // library the rules use and the native JSON decoder.
        let shared = lua.create_table().map_err(lua_error)?;
        let globals = lua.globals();
        for name in [
            "string", "table", "math", "pairs", "ipairs", "type", "tostring", "tonumber", "pcall",
            "error", "select", "next",
        ] {
            let value: LuaValue = globals.raw_get(name).map_err(lua_error)?;
            shared.raw_set(name, value).map_err(lua_error)?;
        }
        let cjson = lua.create_table().map_err(lua_error)?;
        let decode = lua
            .create_function(|lua, text: mlua::LuaString| {
                let value: Value =
                    serde_json::from_slice(&text.as_bytes()).map_err(mlua::Error::external)?;
                lua.to_value(&value)
            })
            .map_err(lua_error)?;
        cjson.raw_set("decode", decode).map_err(lua_error)?;
        shared.raw_set("cjson", cjson).map_err(lua_error)?;
        let env_meta = lua.create_table().map_err(lua_error)?;
        env_meta.raw_set("__index", shared).map_err(lua_error)?;
        let host = host_table(&lua, services, configs).map_err(lua_error)?;
        let login = LoginFields {
            transaction_id: login.transaction_id.clone(),
            time_ms: login.time_ms as i64,
            email: login.email.clone(),
            has_password: login.password.is_some(),
            new_user_id: login.new_user_id(),
            user: login.user.as_ref().map(|u| {
                (
                    u.id.clone(),
                    u.email.clone(),
                    u.email_verified,
                    u.app_metadata.to_string(),
                    u.user_metadata.to_string(),
                )
            }),
        };
        Ok(Self {
            lua,
            chunk,
            env_meta,
            host,
            login,
        })
    }

    /// One login: a fresh environment, the login copied in, the chunk run in it, then
    /// its `evaluate`.
    fn evaluate(&self) -> mlua::Result<Table> {
        let lua = &self.lua;
        let env = lua.create_table()?;
        env.set_metatable(Some(self.env_meta.clone()))?;
        let ctx = lua.create_table()?;
        let l = &self.login;
        ctx.raw_set("transaction_id", l.transaction_id.as_str())?;
        ctx.raw_set("time_ms", l.time_ms)?;
        ctx.raw_set("email", l.email.as_str())?;
        ctx.raw_set("has_password", l.has_password)?;
        ctx.raw_set("new_user_id", l.new_user_id.as_str())?;
        if let Some((id, email, verified, app, user_metadata)) = &l.user {
            let user = lua.create_table()?;
            user.raw_set("id", id.as_str())?;
            user.raw_set("email", email.as_deref())?;
            user.raw_set("email_verified", *verified)?;
            user.raw_set("app_metadata", app.as_str())?;
            user.raw_set("user_metadata", user_metadata.as_str())?;
            ctx.raw_set("user", user)?;
        }
        self.chunk.set_environment(env.clone())?;
        self.chunk.call::<()>(())?;
        let evaluate: Function = env.raw_get("evaluate")?;
        evaluate.call((ctx, &self.host))
    }
}

impl Engine for LuaEngine {
    type Out = Result<Table, String>;

    fn login(&mut self) -> Self::Out {
        self.evaluate().map_err(lua_error)
    }

    fn verdict(&self, out: &Self::Out) -> Result<Expectation, String> {
        let result = out.as_ref().map_err(Clone::clone)?;
        let decision: Value = self
            .lua
            .from_value(result.raw_get("decision").map_err(lua_error)?)
            .map_err(lua_error)?;
        let effects: Table = result.raw_get("effects").map_err(lua_error)?;
        let effects = effects
            .sequence_values::<LuaValue>()
            .map(|e| {
                self.lua
                    .from_value::<Value>(e.map_err(lua_error)?)
                    .map_err(lua_error)
            })
            .collect::<Result<Vec<Value>, String>>()?;
        expectation_from_script(decision, effects)
    }
}

/// The capabilities, answered from the recording's services (as `NativeHost`); one
/// table for every login, as the JS host object is.
fn host_table(
    lua: &Lua,
    services: &Services,
    configs: &[BTreeMap<String, String>],
) -> mlua::Result<Table> {
    let host = lua.create_table()?;
    let by_rule: BTreeMap<String, BTreeMap<String, String>> = RULE_NAMES
        .iter()
        .map(|n| n.to_string())
        .zip(configs.iter().cloned())
        .collect();
    host.raw_set(
        "config",
        lua.create_function(move |_, (rule, key): (mlua::LuaString, mlua::LuaString)| {
            let (rule, key) = (rule.to_str()?, key.to_str()?);
            Ok(by_rule.get(&*rule).and_then(|c| c.get(&*key)).cloned())
        })?,
    )?;
    host.raw_set(
        "log",
        lua.create_function(|_, (_level, message): (mlua::LuaString, mlua::LuaString)| {
            std::hint::black_box(message);
            Ok(())
        })?,
    )?;
    let s = services.clone();
    host.raw_set(
        "verifyDirectoryPassword",
        lua.create_function(move |_, id: mlua::LuaString| {
            s.directory
                .verify_password(&id.to_str()?, &"bench".into())
                .map_err(|e| mlua::Error::runtime(e.message))
        })?,
    )?;
    let s = services.clone();
    host.raw_set(
        "findLegacyAccounts",
        lua.create_function(move |lua, email: mlua::LuaString| {
            let accounts = s
                .legacy
                .find_accounts(&email.to_str()?)
                .map_err(|e| mlua::Error::runtime(e.message))?;
            let list = lua.create_table_with_capacity(accounts.len(), 0)?;
            for a in accounts {
                let t = lua.create_table_with_capacity(0, 6)?;
                t.raw_set("product", a.product)?;
                t.raw_set("legacy_id", a.legacy_id)?;
                t.raw_set("email", a.email)?;
                t.raw_set("email_verified", a.email_verified)?;
                t.raw_set("created_at_ms", a.created_at_ms)?;
                t.raw_set("profile", a.profile.to_string())?;
                list.raw_push(t)?;
            }
            Ok(list)
        })?,
    )?;
    let s = services.clone();
    host.raw_set(
        "verifyLegacyPassword",
        lua.create_function(
            move |_, (product, id): (mlua::LuaString, mlua::LuaString)| {
                s.legacy
                    .verify_password(&product.to_str()?, &id.to_str()?, &"bench".into())
                    .map_err(|e| mlua::Error::runtime(e.message))
            },
        )?,
    )?;
    Ok(host)
}
