"""Human-in-the-loop approvals: records, the store, a session's waiter, dead workers' requests."""
