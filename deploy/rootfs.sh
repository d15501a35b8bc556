#!/bin/sh
# Completes a runtime root file system around $1/usr/local/bin/flotilla: the shared libraries the
# binary links (found with ldd, copied to the same paths), /etc/passwd and /etc/group entries for
# the non-root user 65532 ("flotilla"), and /data and /tmp owned by it. Used by deploy/Dockerfile.
set -eu
root=$1
bin=$root/usr/local/bin/flotilla
test -x "$bin" || { echo "rootfs.sh: no executable at $bin" >&2; exit 1; }

# Every library ldd resolves, and the dynamic loader (the line without "=>").
ldd "$bin" | awk '/=> \// { print $3 } /^\t\// { print $1 }' | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

mkdir -p "$root/etc" "$root/data" "$root/tmp"
echo "root:x:0:0:root:/root:/sbin/nologin" >"$root/etc/passwd"
echo "flotilla:x:65532:65532:flotilla:/data:/sbin/nologin" >>"$root/etc/passwd"
printf 'root:x:0:\nflotilla:x:65532:\n' >"$root/etc/group"
# glibc reads these; Docker bind-mounts /etc/hosts and /etc/resolv.conf itself.
echo "hosts: files dns" >"$root/etc/nsswitch.conf"
chown 65532:65532 "$root/data"
chmod 1777 "$root/tmp"
"$bin" --version
