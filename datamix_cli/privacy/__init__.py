"""What a curious cloud can recover: the scene it sees, registered attacks, metrics, judging, the audit, plots."""
