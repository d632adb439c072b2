"""After-sales service: business hours, the queue and routing, SLA, off-hours notices, problem reports, evidence, satisfaction."""
