// The four migration rules in JavaScript, for the benchmark's JS-sandbox column: the
// same logic as rules/<name>/src/lib.rs, run the way hosted JS rule engines run rules
// (a fresh `vm` context per evaluation). `host` offers the same capabilities.

function flag(metadataJson, name) {
  try {
    const metadata = JSON.parse(metadataJson);
    return metadata !== null && metadata[name] === true;
  } catch (e) {
    return false;
  }
}

function bulkImportedSkip(ctx, host) {
  const bulkFlag = host.config("bulk-imported-skip", "bulk_flag") || "bulkImported";
  const resetFlag = host.config("bulk-imported-skip", "reset_flag") || "forcePasswordReset";
  if (ctx.user && flag(ctx.user.app_metadata, bulkFlag) && flag(ctx.user.app_metadata, resetFlag)) {
    return { decision: { type: "challenge", kind: "password_reset" }, effects: [] };
  }
  return { decision: { type: "continue" }, effects: [] };
}

const DENY_INVALID = {
  decision: { type: "deny", code: "invalid_credentials", message: "Wrong email or password.", retryable: false },
  effects: [],
};

function matchingLegacyAccounts(email, host) {
  const accounts = host.findLegacyAccounts(email);
  const matched = [];
  for (const account of accounts) {
    const answer = host.verifyLegacyPassword(account.product, account.legacy_id);
    if (answer === true) matched.push(account);
  }
  return matched;
}

function migrateOnLogin(ctx, host) {
  const bulkFlag = host.config("migrate-on-login", "bulk_flag") || "bulkImported";
  if (ctx.user) {
    if (!ctx.has_password) return { decision: { type: "continue" }, effects: [] };
    if (host.verifyDirectoryPassword(ctx.user.id)) return { decision: { type: "continue" }, effects: [] };
    if (flag(ctx.user.app_metadata, bulkFlag) || flag(ctx.user.app_metadata, "migrated")) return DENY_INVALID;
    const matched = matchingLegacyAccounts(ctx.email, host);
    if (matched.length === 0) return DENY_INVALID;
    return {
      decision: { type: "continue" },
      effects: matched.map((a) => ({ type: "link_legacy_account", product: a.product, legacy_id: a.legacy_id })),
    };
  }
  if (!ctx.has_password) return DENY_INVALID;
  const matched = matchingLegacyAccounts(ctx.email, host);
  if (matched.length === 0) return DENY_INVALID;
  const products = matched.map((a) => a.product);
  host.log("info", `migrating ${ctx.new_user_id} from ${products.join(", ")}`);
  const effects = [
    {
      type: "create_user",
      email: ctx.email,
      email_verified: matched.some((a) => a.email_verified),
      app_metadata: JSON.stringify({ migrated: true, migrated_from: products, migrated_at: ctx.time_ms }),
      user_metadata: matched[0].profile,
      password_from_login: true,
    },
  ];
  for (const a of matched) effects.push({ type: "link_legacy_account", product: a.product, legacy_id: a.legacy_id });
  return { decision: { type: "continue" }, effects };
}

function ownershipCheck(ctx, host) {
  const bulkFlag = host.config("ownership-check", "bulk_flag") || "bulkImported";
  if (ctx.user && (flag(ctx.user.app_metadata, "migrated") || flag(ctx.user.app_metadata, bulkFlag))) {
    return { decision: { type: "continue" }, effects: [] };
  }
  const accounts = host.findLegacyAccounts(ctx.email);
  const products = [...new Set(accounts.map((a) => a.product))].sort();
  const squatter = accounts.length > 0 && ctx.user && !ctx.user.email_verified;
  let reason;
  if (squatter) reason = "unverified_directory_account";
  else if (products.length > 1) reason = "several_products";
  else return { decision: { type: "continue" }, effects: [] };
  const url = host.config("ownership-check", "verify_url");
  host.log("info", `inbox proof required: ${reason} (${products.join(", ")})`);
  const state = JSON.stringify({ reason, accounts: accounts.map((a) => [a.product, a.legacy_id]) });
  return { decision: { type: "redirect", url, reason, state }, effects: [] };
}

function idPropagation(ctx, host) {
  const topic = host.config("id-propagation", "topic") || "id-propagation";
  const createsUser = ctx.pending.some((e) => e.type === "create_user");
  let userId;
  if (createsUser) userId = ctx.new_user_id;
  else if (ctx.user) userId = ctx.user.id;
  else return { decision: { type: "continue" }, effects: [] };
  const keys = new Set();
  const effects = [];
  for (const e of ctx.pending) {
    if (e.type !== "link_legacy_account") continue;
    const key = `${e.product}:${e.legacy_id}`;
    if (keys.has(key)) continue;
    keys.add(key);
    effects.push({
      type: "enqueue_outbox",
      topic,
      key,
      payload: JSON.stringify({ user_id: userId, product: e.product, legacy_id: e.legacy_id }),
    });
  }
  return { decision: { type: "continue" }, effects };
}

function evaluate(ctx, host) {
  const rules = [
    ["bulk-imported-skip", bulkImportedSkip],
    ["migrate-on-login", migrateOnLogin],
    ["ownership-check", ownershipCheck],
    ["id-propagation", idPropagation],
  ];
  ctx.pending = [];
  let decision = { type: "allow" };
  for (const [name, rule] of rules) {
    const outcome = rule(ctx, host);
    ctx.pending.push(...outcome.effects);
    if (outcome.decision.type !== "continue") {
      // Named after the rule that made it, as the host's verdict is.
      decision = { ...outcome.decision, rule: name };
      break;
    }
  }
  return { decision, effects: decision.type === "deny" ? [] : ctx.pending };
}
