-- Schema version 3: lease recall. When a node is refused credit that other nodes' open leases
-- of the same account reserve, ledgerd stamps those leases with recalled_ms; their nodes poll
-- for recalled leases and return them (release with their spend), so a balance spread over
-- many nodes stays spendable from any of them. 0 = not recalled.
ALTER TABLE leases ADD COLUMN recalled_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX leases_recalled ON leases (edge_id) WHERE state = 'open' AND recalled_ms > 0;
