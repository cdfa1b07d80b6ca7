# shellcheck shell=bash
# The Debian packages a benchmark needs, installed only when missing. Shared by bench/run.sh and
# bench/passwords.sh (sourced, not run): the caller defines `log` and `die`.

# need_packages COMMAND=PACKAGE...: installs, in one apt-get run, the PACKAGE of every COMMAND
# found neither on PATH nor in /usr/sbin; the packages' init scripts are kept from starting a
# system server (nginx on port 80) while they install.
need_packages() {
    local pair need=() made_policy=0
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null || [ -x "/usr/sbin/${pair%%=*}" ] || need+=("${pair#*=}")
    done
    [ ${#need[@]} -gt 0 ] || return 0
    log "installing ${need[*]}"
    [ "$(id -u)" = 0 ] || die "run as root to install ${need[*]}, or install them first"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ $made_policy = 0 ] || rm -f /usr/sbin/policy-rc.d
}
