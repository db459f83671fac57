#!/usr/bin/env bash
# Compilers and runtimes that MultiPL-E evaluation runs in the sandbox (megacode/eval/languages.py):
# g++ (C++), a JDK and javatuples (Java), php-cli (PHP), mono's mcs + runtime (C#), node (JavaScript) and the
# TypeScript compiler from npm, bash. Idempotent: it installs only what is missing and returns
# at once when everything is there. apt waits for other apt users instead of failing.
set -euo pipefail
TYPESCRIPT_VERSION=5.9.3
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

declare -A need=([g++]=g++ [javac]=openjdk-17-jdk-headless [php]=php-cli [mcs]=mono-mcs [mono]=mono-runtime
                 [node]=nodejs [npm]=npm [bash]=bash)
packages=()
for tool in "${!need[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || packages+=("${need[$tool]}")
done
# MultiPL-E's Java prompts import org.javatuples (their evaluator puts javatuples 1.2 on the class path).
[ -f /usr/share/java/javatuples-1.2.jar ] || packages+=(libjavatuples-java)
# mcs -r:System.Numerics.dll needs the assembly, which mono-mcs alone may not pull in.
if command -v mcs >/dev/null 2>&1 && ! ls /usr/lib/mono/4.5/System.Numerics.dll >/dev/null 2>&1; then
    packages+=(libmono-system-numerics4.0-cil)
elif ! command -v mcs >/dev/null 2>&1; then
    packages+=(libmono-system-numerics4.0-cil)
fi
if [ ${#packages[@]} -gt 0 ]; then
    echo "install_eval_toolchains: apt-get install ${packages[*]}"
    apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
    # DPkg::Lock::Timeout covers the dpkg lock only; the lists lock of a concurrent update is waited for here.
    for attempt in $(seq 60); do
        $SUDO apt-get "${apt_opts[@]}" update -qq && break
        [ "$attempt" -lt 60 ] || exit 1
        sleep 10
    done
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null
fi
if ! command -v tsc >/dev/null 2>&1 || [ "$(tsc --version 2>/dev/null)" != "Version $TYPESCRIPT_VERSION" ]; then
    echo "install_eval_toolchains: npm install -g typescript@$TYPESCRIPT_VERSION"
    $SUDO npm install -g --no-fund --no-audit --loglevel=error "typescript@$TYPESCRIPT_VERSION" >/dev/null
fi
