#!/bin/sh
# Feed CI runtime test: $1 is the package name, $2 its version (without the release).

case "$1" in
masq)
	version="$(masq --version)" || exit 1
	echo "$version"
	case "$version" in
	"masq ${2%%-*}"*) ;;
	*) echo "masq --version does not name version $2" >&2; exit 1 ;;
	esac
	masq check-config -C /etc/config/masq >/dev/null || exit 1
	;;
masq-modem)
	python3 -c 'import serial' || exit 1
	;;
esac
exit 0
