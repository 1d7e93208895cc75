//! The original collector's reader role, `netflow_user`, on nfpg's private server.
//!
//! Migration `0014_original_views` owns the original's world in SQL: the views
//! `netflow_flows`, `netflow_exporters`, `netflow_aggregates`, `netflow_debug_log`, and the
//! role (created NOLOGIN when missing, read-only grants, its `search_path`). This module owns
//! the one thing SQL files cannot know: the role's password. When nfpg starts its private
//! server (no `DATABASE_URL` or `DB_HOST`) and `DB_PASSWORD` is set and not empty,
//! `netflow_user` gets that password and LOGIN, so the original's scripts log in with the
//! settings they always had. Against a configured server nfpg leaves roles alone: there
//! `DB_USER`/`DB_PASSWORD` are nfpg's own login, and roles are the administrator's.
//!
//! The password never appears in a statement's text: it travels as a bound parameter into a
//! transaction-local setting that a `DO` block reads, statement and duration logging are off
//! for the transaction, and errors are reported without the statement (PostgreSQL would
//! otherwise write a failing `ALTER ROLE … PASSWORD '…'` to its log). nfpg never logs it.

use anyhow::{Context, Result};
use postgres::Client;

/// The original collector's role.
pub const ROLE: &str = "netflow_user";

/// The environment variable whose value becomes [`ROLE`]'s password on the private server.
pub const PASSWORD_ENV: &str = "DB_PASSWORD";

/// Creates [`ROLE`] if missing, and gives it LOGIN and the password stored in the SCRAM form
/// the server's `password_encryption` says. `client` must be a superuser's (or a role with
/// CREATEROLE and ADMIN on `ROLE`) connection to any database of the cluster.
pub fn set_password(client: &mut Client, password: &str) -> Result<()> {
    let mut tx = client.transaction()?;
    // Superuser-only settings; the private server's superuser has them. They keep the bound
    // value out of the server log even where log_statement = all was configured.
    tx.batch_execute(
        "SET LOCAL log_statement = 'none';
         SET LOCAL log_min_duration_statement = -1;
         SET LOCAL log_parameter_max_length = 0;",
    )
    .context("preparing to set netflow_user's password")?;
    tx.execute(
        "SELECT set_config('nfpg.netflow_user_password', $1, true)",
        &[&password],
    )
    .context("setting netflow_user's password")?;
    tx.batch_execute(
        "DO $pw$
         BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'netflow_user') THEN
                 BEGIN
                     CREATE ROLE netflow_user NOLOGIN;
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN
                     NULL;
                 END;
             END IF;
             EXECUTE format('ALTER ROLE netflow_user LOGIN PASSWORD %L',
                            current_setting('nfpg.netflow_user_password'));
         EXCEPTION WHEN OTHERS THEN
             -- Re-raised without the statement, which holds the password.
             RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = SQLERRM;
         END
         $pw$",
    )
    .context("setting netflow_user's password")?;
    tx.commit().context("setting netflow_user's password")?;
    Ok(())
}

/// On the private server: `DB_PASSWORD`, when set and not empty, becomes [`ROLE`]'s password
/// (with LOGIN). Called by [`super::db::open_database`] for the private server only, before
/// migrations (the role is cluster-wide; migration 0014 grants it the schema). A failure is
/// logged, never fatal: storing flows does not depend on it. Unset, the role is left as it is
/// (NOLOGIN as the migration made it, or as an earlier run or the administrator left it).
pub fn apply_env_password(client: &mut Client) {
    let Some(password) = std::env::var_os(PASSWORD_ENV).filter(|p| !p.is_empty()) else {
        return;
    };
    let Some(password) = password.to_str() else {
        tracing::warn!("{PASSWORD_ENV} is not valid UTF-8: {ROLE} keeps its password");
        return;
    };
    match set_password(client, password) {
        Ok(()) => tracing::info!("{ROLE} may log in with the password in {PASSWORD_ENV}"),
        // The server's message never quotes the password; scrubbed anyway.
        Err(e) => tracing::warn!(
            "{ROLE} keeps its password: {}",
            format!("{e:#}").replace(password, "***")
        ),
    }
}
