-- NetFlow v9 / IPFIX templates as the exporters sent them, so a restarted collector (or a
-- second one) decodes data at once instead of waiting minutes for the next template.
-- definition: nfpg-wire's compact encoding of the template (field ids, enterprise numbers,
-- lengths, scope count), written by the housekeeper when a template is learned or changed,
-- deleted when the exporter withdraws it.
CREATE TABLE {schema}.templates (
    exporter     inet        NOT NULL,
    domain       int8        NOT NULL,
    template_id  int4        NOT NULL,
    version      int2        NOT NULL,
    definition   bytea       NOT NULL,
    learned_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exporter, domain, template_id)
);
