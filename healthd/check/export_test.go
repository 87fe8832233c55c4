package check

// SetForcePoller makes TCP checks take the poller path even when the
// connect finished within the socket call (benchmarks only).
func SetForcePoller(on bool) { forcePoller = on }
