#!/bin/sh
# make-tarball.sh: builds egret (release) and packs it with its configuration, rules, boot
# helper, systemd units and an install.sh into
# ${CARGO_TARGET_DIR:-target}/egret-VERSION-ARCH-linux.tar.gz, for hosts without dpkg.
#
#   deploy/make-tarball.sh            # then, on the host:
#   tar xzf egret-0.1.0-x86_64-linux.tar.gz && sudo egret-0.1.0-x86_64-linux/install.sh
#
# install.sh puts the files where the Debian package does (binaries in /usr/bin and
# /usr/sbin, configuration in /etc/egret, which it never overwrites; units in
# /etc/systemd/system), creates the egret user and /var/log/egret, and enables nothing.
# DESTDIR=/some/dir install.sh installs the files under that directory only.
set -eu

cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p egret

id=$(cargo pkgid -p egret)
version=${id##*[@#]}
name=egret-$version-$(uname -m)-linux
stage=$target/tarball
rm -rf "$stage"
mkdir -p "$stage/$name/bin" "$stage/$name/etc" "$stage/$name/sbin" "$stage/$name/systemd" \
    "$stage/$name/doc"

install -m 755 "$target/release/egret" "$stage/$name/bin/egret"
# The release profile's line tables are most of the binary; the symbols stay (backtraces name
# functions). The .deb ships the line tables apart, in egret-dbgsym.
strip --strip-debug "$stage/$name/bin/egret"
install -m 644 deploy/egret.toml deploy/nftables.conf "$stage/$name/etc/"
install -m 755 deploy/egret-setup "$stage/$name/sbin/egret-setup"
install -m 644 deploy/egret.logrotate "$stage/$name/etc/egret.logrotate"
install -m 644 deploy/egret.service deploy/egret-nftables.service deploy/egret-eni.service \
    "$stage/$name/systemd/"
install -m 644 README.md deploy/PACKAGING.md "$stage/$name/doc/"
install -m 644 deploy/README.md "$stage/$name/doc/transparent-mode.md"

cat >"$stage/$name/install.sh" <<'EOF'
#!/bin/sh
# Installs Egret from this directory; see doc/PACKAGING.md. Run as root.
# DESTDIR=/dir installs the files under /dir and skips the user and systemd steps.
set -eu
cd "$(dirname "$0")"
dest=${DESTDIR:-}
install -D -m 755 bin/egret "$dest/usr/bin/egret"
install -D -m 755 sbin/egret-setup "$dest/usr/sbin/egret-setup"
install -d -m 755 "$dest/etc/egret" "$dest/etc/systemd/system"
for file in egret.toml nftables.conf; do
    if [ ! -e "$dest/etc/egret/$file" ]; then
        install -m 644 "etc/$file" "$dest/etc/egret/$file"
    elif ! cmp -s "etc/$file" "$dest/etc/egret/$file"; then
        install -m 644 "etc/$file" "$dest/etc/egret/$file.new"
        echo "install.sh: kept your /etc/egret/$file; the shipped one is $file.new"
    fi
done
install -m 644 systemd/egret.service systemd/egret-nftables.service systemd/egret-eni.service \
    "$dest/etc/systemd/system/"
if [ ! -e "$dest/etc/logrotate.d/egret" ]; then
    install -D -m 644 etc/egret.logrotate "$dest/etc/logrotate.d/egret"
fi
if [ -n "$dest" ]; then
    exit 0
fi
if ! getent passwd egret >/dev/null; then
    useradd --system --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin egret
fi
install -d -o egret -g egret -m 0750 /var/log/egret
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
echo "install.sh: installed; edit /etc/egret/egret.toml, then: systemctl enable --now egret"
EOF
chmod 755 "$stage/$name/install.sh"

tarball=$target/$name.tar.gz
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime="@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}" \
    -czf "$tarball" "$name"
rm -rf "$stage"
echo "$tarball"
