//! The `templates` table: v9/IPFIX templates as exporters defined them, written when one is
//! learned, changed or withdrawn, and read back at start so data decodes at once after a
//! restart. The definitions are opaque bytes here (nfpg-wire encodes and decodes them).
//!
//! Rows belong to the collector instance that learned them (several collectors may share the
//! table); a collector loads its own, and another's for a template it has none of (an
//! exporter that moved to it, e.g. behind an anycast address).

use anyhow::Result;
use postgres::Client;

use super::db::Schema;
use crate::flow::batch::u128_to_addr;

/// One template row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTemplate {
    pub exporter: u128,
    pub domain: u32,
    pub template_id: u16,
    pub version: u8,
    pub definition: Vec<u8>,
}

/// A change to write: a definition, or a withdrawal (`definition` None).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateChange {
    pub exporter: u128,
    pub domain: u32,
    pub template_id: u16,
    pub version: u8,
    pub definition: Option<Vec<u8>>,
}

/// Every stored template, one per (exporter, domain, template id): `instance`'s own row if it
/// has one, else the most recently learned of another instance.
pub fn load(client: &mut Client, schema: &Schema, instance: &str) -> Result<Vec<StoredTemplate>> {
    let rows = client.query(
        &schema.render(
            "SELECT DISTINCT ON (exporter, domain, template_id)
                    exporter, domain, template_id, version, definition
             FROM {schema}.templates
             ORDER BY exporter, domain, template_id, (instance = $1) DESC, learned_at DESC",
        ),
        &[&instance],
    )?;
    Ok(rows
        .iter()
        .map(|r| StoredTemplate {
            exporter: crate::flow::batch::addr_to_u128(r.get(0)),
            domain: r.get::<_, i64>(1) as u32,
            template_id: r.get::<_, i32>(2) as u16,
            version: r.get::<_, i16>(3) as u8,
            definition: r.get(4),
        })
        .collect())
}

/// Writes changes in one transaction, in order (a definition after a withdrawal wins), as
/// `instance`'s rows. A withdrawal removes the template for every instance: the exporter
/// withdrew it, whoever stored it.
pub fn write(
    client: &mut Client,
    schema: &Schema,
    changes: &[TemplateChange],
    instance: &str,
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let upsert = schema.render(
        "INSERT INTO {schema}.templates (exporter, domain, template_id, version, definition, instance)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (instance, exporter, domain, template_id) DO UPDATE SET
             version = excluded.version, definition = excluded.definition, learned_at = now()",
    );
    let delete = schema.render(
        "DELETE FROM {schema}.templates WHERE exporter = $1 AND domain = $2 AND template_id = $3",
    );
    let mut tx = client.transaction()?;
    for c in changes {
        let addr = u128_to_addr(c.exporter);
        let (domain, id) = (i64::from(c.domain), i32::from(c.template_id));
        match &c.definition {
            Some(def) => {
                tx.execute(
                    &upsert,
                    &[&addr, &domain, &id, &i16::from(c.version), def, &instance],
                )?;
            }
            None => {
                tx.execute(&delete, &[&addr, &domain, &id])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}
