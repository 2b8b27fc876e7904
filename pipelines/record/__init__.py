"""The run record: its typed shape and checks (schema), the one loader that upgrades older
shapes (upgrade), how a run's plan and outcome become one (build), where records live (store),
what was published where (ledger), and which runs may be compared (comparable)."""
