package testutil

// MetricUnit turns a benchmark row's name into a unit for
// testing.B.ReportMetric: letters and digits kept, every other run of
// characters one '-' (a unit may not contain spaces).
func MetricUnit(name string) string {
	out := []byte{}
	for _, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			out = append(out, c)
		case len(out) > 0 && out[len(out)-1] != '-':
			out = append(out, '-')
		}
	}
	return string(out)
}
