-- The four migration rules in Lua 5.4, for the benchmark's reused-Lua-state column:
-- the same logic as rules/js/rules.js (and rules/<name>/src/lib.rs), run the way
-- OpenResty runs request handlers: one Lua state for every login, this chunk run in a
-- fresh environment table per login (host/benches/compare/lua.rs). `host` offers the
-- same capabilities as the JS host's; `cjson.decode` is native code, as lua-cjson is
-- in OpenResty. JSON is written here with its keys in the order JS's JSON.stringify
-- and the Rust rules write them, because the verdict is compared with the recording's
-- byte for byte (outbox payloads are strings).

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}

local function escape(c)
  return escapes[c] or string.format("\\u%04x", string.byte(c))
end

local function quote(s)
  return '"' .. (string.gsub(s, '[%z\1-\31\\"]', escape)) .. '"'
end

-- Strings, numbers, booleans and arrays of them (what the rules write).
local function encode(v)
  local t = type(v)
  if t == "string" then
    return quote(v)
  elseif t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    return string.format("%.17g", v)
  elseif t == "boolean" then
    return tostring(v)
  elseif t == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = encode(x) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  return "null"
end

-- An object from key, value, key, value, ...: Lua tables keep no key order.
local function object(...)
  local kv = { ... }
  local parts = {}
  for i = 1, #kv, 2 do parts[#parts + 1] = quote(kv[i]) .. ":" .. encode(kv[i + 1]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function flag(metadata_json, name)
  local ok, metadata = pcall(cjson.decode, metadata_json)
  return ok and type(metadata) == "table" and metadata[name] == true
end

local function continue_with(effects)
  return { decision = { type = "continue" }, effects = effects or {} }
end

local function bulk_imported_skip(ctx, host)
  local bulk_flag = host.config("bulk-imported-skip", "bulk_flag") or "bulkImported"
  local reset_flag = host.config("bulk-imported-skip", "reset_flag") or "forcePasswordReset"
  if ctx.user and flag(ctx.user.app_metadata, bulk_flag) and flag(ctx.user.app_metadata, reset_flag) then
    return { decision = { type = "challenge", kind = "password_reset" }, effects = {} }
  end
  return continue_with()
end

local function deny_invalid()
  return {
    decision = { type = "deny", code = "invalid_credentials", message = "Wrong email or password.", retryable = false },
    effects = {},
  }
end

local function matching_legacy_accounts(email, host)
  local matched = {}
  for _, account in ipairs(host.findLegacyAccounts(email)) do
    if host.verifyLegacyPassword(account.product, account.legacy_id) == true then
      matched[#matched + 1] = account
    end
  end
  return matched
end

local function links(matched, effects)
  for _, a in ipairs(matched) do
    effects[#effects + 1] = { type = "link_legacy_account", product = a.product, legacy_id = a.legacy_id }
  end
  return effects
end

local function migrate_on_login(ctx, host)
  local bulk_flag = host.config("migrate-on-login", "bulk_flag") or "bulkImported"
  if ctx.user then
    if not ctx.has_password then return continue_with() end
    if host.verifyDirectoryPassword(ctx.user.id) then return continue_with() end
    if flag(ctx.user.app_metadata, bulk_flag) or flag(ctx.user.app_metadata, "migrated") then return deny_invalid() end
    local matched = matching_legacy_accounts(ctx.email, host)
    if #matched == 0 then return deny_invalid() end
    return continue_with(links(matched, {}))
  end
  if not ctx.has_password then return deny_invalid() end
  local matched = matching_legacy_accounts(ctx.email, host)
  if #matched == 0 then return deny_invalid() end
  local products, verified = {}, false
  for i, a in ipairs(matched) do
    products[i] = a.product
    verified = verified or a.email_verified
  end
  host.log("info", "migrating " .. ctx.new_user_id .. " from " .. table.concat(products, ", "))
  local effects = {
    {
      type = "create_user",
      email = ctx.email,
      email_verified = verified,
      app_metadata = object("migrated", true, "migrated_from", products, "migrated_at", ctx.time_ms),
      user_metadata = matched[1].profile,
      password_from_login = true,
    },
  }
  return continue_with(links(matched, effects))
end

local function ownership_check(ctx, host)
  local bulk_flag = host.config("ownership-check", "bulk_flag") or "bulkImported"
  if ctx.user and (flag(ctx.user.app_metadata, "migrated") or flag(ctx.user.app_metadata, bulk_flag)) then
    return continue_with()
  end
  local accounts = host.findLegacyAccounts(ctx.email)
  local seen, products = {}, {}
  for _, a in ipairs(accounts) do
    if not seen[a.product] then
      seen[a.product] = true
      products[#products + 1] = a.product
    end
  end
  table.sort(products)
  local squatter = #accounts > 0 and ctx.user and not ctx.user.email_verified
  local reason
  if squatter then
    reason = "unverified_directory_account"
  elseif #products > 1 then
    reason = "several_products"
  else
    return continue_with()
  end
  local url = host.config("ownership-check", "verify_url")
  host.log("info", "inbox proof required: " .. reason .. " (" .. table.concat(products, ", ") .. ")")
  local pairs_ = {}
  for i, a in ipairs(accounts) do pairs_[i] = { a.product, a.legacy_id } end
  local state = object("reason", reason, "accounts", pairs_)
  return { decision = { type = "redirect", url = url, reason = reason, state = state }, effects = {} }
end

local function id_propagation(ctx, host)
  local topic = host.config("id-propagation", "topic") or "id-propagation"
  local creates_user = false
  for _, e in ipairs(ctx.pending) do
    if e.type == "create_user" then creates_user = true end
  end
  local user_id
  if creates_user then
    user_id = ctx.new_user_id
  elseif ctx.user then
    user_id = ctx.user.id
  else
    return continue_with()
  end
  local keys, effects = {}, {}
  for _, e in ipairs(ctx.pending) do
    if e.type == "link_legacy_account" then
      local key = e.product .. ":" .. e.legacy_id
      if not keys[key] then
        keys[key] = true
        effects[#effects + 1] = {
          type = "enqueue_outbox",
          topic = topic,
          key = key,
          payload = object("user_id", user_id, "product", e.product, "legacy_id", e.legacy_id),
        }
      end
    end
  end
  return continue_with(effects)
end

local RULES = {
  { "bulk-imported-skip", bulk_imported_skip },
  { "migrate-on-login", migrate_on_login },
  { "ownership-check", ownership_check },
  { "id-propagation", id_propagation },
}

-- The pipeline: rules in order, each seeing the effects before it, stopping at the
-- first decision that is not `continue` (named after the rule that made it).
function evaluate(ctx, host)
  local pending = {}
  ctx.pending = pending
  local decision = { type = "allow" }
  for _, rule in ipairs(RULES) do
    local outcome = rule[2](ctx, host)
    for _, e in ipairs(outcome.effects) do pending[#pending + 1] = e end
    if outcome.decision.type ~= "continue" then
      decision = outcome.decision
      decision.rule = rule[1]
      break
    end
  end
  if decision.type == "deny" then return { decision = decision, effects = {} } end
  return { decision = decision, effects = pending }
end
