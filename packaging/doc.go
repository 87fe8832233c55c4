// Package packaging holds the Debian package of xlb: its nfpm description
// (nfpm.yaml), the systemd units, the default configs and the maintainer
// scripts. The Go code here is only the test that installs and removes the
// package (scripts/deb-test.sh) as part of `make test`.
package packaging
