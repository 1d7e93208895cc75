-- Application names by destination port (TCP and UDP) and by protocol, as data: the list the
-- original collector hard-coded. Edit the tables to add your own.
CREATE TABLE {schema}.app_names (
    port int4 PRIMARY KEY,
    name text NOT NULL
);
INSERT INTO {schema}.app_names (port, name) VALUES
    (80, 'HTTP'), (443, 'HTTPS'), (53, 'DNS'), (22, 'SSH'), (25, 'SMTP'), (110, 'POP3'),
    (143, 'IMAP'), (3389, 'RDP'), (3306, 'MySQL'), (5432, 'PostgreSQL'), (6379, 'Redis'),
    (27017, 'MongoDB'), (21, 'FTP'), (23, 'Telnet'), (161, 'SNMP'), (162, 'SNMP Trap'),
    (67, 'DHCP Server'), (68, 'DHCP Client'), (123, 'NTP'), (514, 'Syslog'), (1194, 'OpenVPN'),
    (1723, 'PPTP'), (5060, 'SIP'), (5061, 'SIPS'), (8080, 'HTTP-Proxy'), (8443, 'HTTPS-Alt'),
    (993, 'IMAPS'), (995, 'POP3S'), (1433, 'MSSQL'), (1521, 'Oracle'), (389, 'LDAP'),
    (636, 'LDAPS'), (109, 'POP2');

CREATE TABLE {schema}.protocol_names (
    protocol int2 PRIMARY KEY,
    name     text NOT NULL
);
INSERT INTO {schema}.protocol_names (protocol, name) VALUES
    (1, 'ICMP'), (2, 'IGMP'), (6, 'TCP'), (17, 'UDP'), (47, 'GRE'), (50, 'ESP'), (51, 'AH'),
    (89, 'OSPF');

-- The original collector's naming rule: TCP/UDP by destination port (a listed name, else
-- system-PORT below 1024, user-PORT from 1024); other protocols by name or protocol-N.
CREATE VIEW {schema}.flows_with_app AS
SELECT f.*,
       CASE
           WHEN f.protocol IN (6, 17) THEN coalesce(
               a.name,
               CASE WHEN f.dst_port < 1024 THEN 'system-' ELSE 'user-' END || f.dst_port)
           ELSE coalesce(p.name, 'protocol-' || f.protocol)
       END AS application_name,
       (extract(epoch FROM f.flow_end - f.flow_start) * 1000)::int8 AS flow_duration_ms
FROM {schema}.flows f
LEFT JOIN {schema}.app_names a ON f.protocol IN (6, 17) AND a.port = f.dst_port
LEFT JOIN {schema}.protocol_names p ON p.protocol = f.protocol;
