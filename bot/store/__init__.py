"""The app's durable state: one interface, shared operations, a backend per database."""
