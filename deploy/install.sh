#!/usr/bin/env bash
# Install (or update) Storeside's edge on a store device: Raspberry Pi OS / Debian 12
# (bookworm), arm64 or amd64. Run as root from a checkout of the repository:
#
#   sudo deploy/install.sh --chain acme --store s042 [--hostname pos-s042] [--ip 10.0.4.2]
#
# Safe to run again (an update): code, units, broker config and ACL are replaced; the
# settings, secrets, certificates and data that exist are kept. See docs/operations.md.
#
# Options:
#   --chain ID --store ID   written into a new /etc/storeside/edge.toml (kept if it exists)
#   --hostname NAME         the device's name in the broker certificate (repeatable;
#                           default: $(hostname) and $(hostname).local)
#   --ip ADDR               an address in the certificate (repeatable; default: hostname -I)
#   --wheel FILE            install this wheel instead of the checkout
#   --mqtt-secret-file F    the store MQTT secret derived by the chain's hub
#                           (storeside-hub store-mqtt-secret STORE > F): the hub can then hand
#                           apps their passwords; replaces the secret there is. Without it a
#                           random secret is made once (a standalone store)
#   --with-hub              also install storeside-hub.service (central server only)
#   --prefix DIR            install into DIR instead of / (a staging root; implies nothing
#                           else: combine with the --no-* options to stay off the system)
#   --no-apt --no-users --no-venv --no-systemd   skip those steps (tests, image builds)
# Environment: STORESIDE_USER/STORESIDE_GROUP (default storeside), BROKER_GROUP (default
# mosquitto), PYTHON (interpreter with the storeside package, for --no-venv).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PREFIX="" CHAIN="" STORE="" WHEEL="" WITH_HUB=0 MQTT_SECRET_FILE=""
DO_APT=1 DO_USERS=1 DO_VENV=1 DO_SYSTEMD=1
HOSTNAMES=() IPS=()
SVC_USER=${STORESIDE_USER:-storeside}
SVC_GROUP=${STORESIDE_GROUP:-storeside}
BROKER_GROUP=${BROKER_GROUP:-mosquitto}

die() { echo "install.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --chain) CHAIN=$2; shift 2 ;;
        --store) STORE=$2; shift 2 ;;
        --hostname) HOSTNAMES+=("$2"); shift 2 ;;
        --ip) IPS+=("$2"); shift 2 ;;
        --wheel) WHEEL=$2; shift 2 ;;
        --mqtt-secret-file) MQTT_SECRET_FILE=$2; shift 2 ;;
        --with-hub) WITH_HUB=1; shift ;;
        --prefix) PREFIX=$(realpath -m "$2"); shift 2 ;;
        --no-apt) DO_APT=0; shift ;;
        --no-users) DO_USERS=0; shift ;;
        --no-venv) DO_VENV=0; shift ;;
        --no-systemd) DO_SYSTEMD=0; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "run as root (files are owned by root, $SVC_GROUP, $BROKER_GROUP)"
ID_RE='^[a-z0-9][a-z0-9_-]{0,31}$'
[ -z "$CHAIN" ] || [[ $CHAIN =~ $ID_RE ]] || die "bad --chain $CHAIN"
[ -z "$STORE" ] || [[ $STORE =~ $ID_RE ]] || die "bad --store $STORE"
if [ -n "$MQTT_SECRET_FILE" ]; then
    [ -r "$MQTT_SECRET_FILE" ] || die "cannot read --mqtt-secret-file $MQTT_SECRET_FILE"
    [ "$(tr -d ' \t\r\n' < "$MQTT_SECRET_FILE" | wc -c)" -ge 16 ] \
        || die "--mqtt-secret-file $MQTT_SECRET_FILE: a secret has at least 16 characters"
fi

P=$PREFIX
OPT=$P/opt/storeside ETC=$P/etc/storeside LIB=$P/var/lib/storeside
BROKER=$P/etc/mosquitto/storeside UNITS=$P/etc/systemd/system
log() { echo "install.sh: $*"; }

# 1. packages -------------------------------------------------------------------------
if [ $DO_APT -eq 1 ]; then
    log "apt packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # chrony: check-in tokens expire in minutes; a device clock that drifted refuses them.
    apt-get install -y -qq python3 python3-venv mosquitto mosquitto-clients openssl \
        ca-certificates chrony >/dev/null
fi

# 2. system user ------------------------------------------------------------------------
if [ $DO_USERS -eq 1 ] && ! getent passwd "$SVC_USER" >/dev/null; then
    log "system user $SVC_USER"
    useradd --system --user-group --home-dir /var/lib/storeside --no-create-home \
        --shell /usr/sbin/nologin "$SVC_USER"
fi
getent group "$SVC_GROUP" >/dev/null || die "group $SVC_GROUP does not exist"
getent group "$BROKER_GROUP" >/dev/null || die "group $BROKER_GROUP does not exist (mosquitto)"

# 3. directories ------------------------------------------------------------------------
install -d -m 0755 -o root -g root "$OPT" "$UNITS" "$P/etc/systemd/journald.conf.d"
install -d -m 0750 -o root -g "$SVC_GROUP" "$ETC" "$ETC/keys" "$ETC/model-keys" "$ETC/mqtt"
install -d -m 0700 -o root -g root "$ETC/ca"
install -d -m 0750 -o "$SVC_USER" -g "$SVC_GROUP" "$LIB"
install -d -m 0750 -o root -g "$BROKER_GROUP" "$BROKER" "$BROKER/certs" "$BROKER/conf.d"

# 4. code -------------------------------------------------------------------------------
if [ $DO_VENV -eq 1 ]; then
    log "virtualenv $OPT/.venv"
    [ -x "$OPT/.venv/bin/python" ] || python3 -m venv "$OPT/.venv"
    "$OPT/.venv/bin/pip" install -q --upgrade pip
    "$OPT/.venv/bin/pip" install -q "${WHEEL:-$REPO}"
    install -d -m 0755 "$OPT/docs" && cp "$REPO"/docs/*.md "$OPT/docs/"
    PY=$OPT/.venv/bin/python
else
    PY=${PYTHON:-python3}
fi
"$PY" -c "import edge.broker_config" 2>/dev/null || die "$PY cannot import the storeside package"

# 5. settings (kept when present) --------------------------------------------------------
if [ ! -e "$ETC/edge.toml" ]; then
    log "settings $ETC/edge.toml (from deploy/edge.example.toml)"
    sed -e "s/^chain = .*/chain = \"${CHAIN:-acme}\"/" -e "s/^store = .*/store = \"${STORE:-store-001}\"/" \
        "$REPO/deploy/edge.example.toml" > "$ETC/edge.toml"
fi
chown root:"$SVC_GROUP" "$ETC/edge.toml" && chmod 0640 "$ETC/edge.toml"
STORE_ID=$(sed -n 's/^store = "\(.*\)".*/\1/p' "$ETC/edge.toml")

# 6. MQTT secrets (kept when present) ----------------------------------------------------
new_secret() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
if [ -n "$MQTT_SECRET_FILE" ]; then
    (umask 077; tr -d ' \t\r\n' < "$MQTT_SECRET_FILE" > "$ETC/mqtt/secret.new")
    mv -f "$ETC/mqtt/secret.new" "$ETC/mqtt/secret"; log "store MQTT secret from $MQTT_SECRET_FILE"
fi
[ -s "$ETC/mqtt/secret" ] || { (umask 077; new_secret > "$ETC/mqtt/secret"); log "new store MQTT secret"; }
chown root:root "$ETC/mqtt/secret" && chmod 0600 "$ETC/mqtt/secret"
for user in _storeside-edge _storeside-pos _storeside-staff; do
    file=$ETC/mqtt/$user.password
    [ -s "$file" ] || (umask 077; new_secret > "$file")
    # only the edge's own password is readable by the service; the others are handed out
    if [ "$user" = _storeside-edge ]; then
        chown root:"$SVC_GROUP" "$file"; chmod 0640 "$file"
    else
        chown root:root "$file"; chmod 0600 "$file"
    fi
done

# 7. certificates (kept when present) ----------------------------------------------------
if [ ! -s "$ETC/ca/server.crt" ]; then
    [ ${#HOSTNAMES[@]} -gt 0 ] || HOSTNAMES=("$(hostname)" "$(hostname).local")
    if [ ${#IPS[@]} -eq 0 ]; then read -r -a IPS <<< "$(hostname -I 2>/dev/null || true)"; fi
    args=(--store "$STORE_ID" --out "$ETC/ca")
    for h in "${HOSTNAMES[@]}"; do args+=(--hostname "$h"); done
    for a in "${IPS[@]}"; do args+=(--ip "$a"); done
    log "certificates for ${HOSTNAMES[*]} ${IPS[*]} 127.0.0.1"
    "$PY" -m edge.cli make-certs "${args[@]}" >/dev/null
fi
chmod 0600 "$ETC/ca/server.key" "$ETC/ca/ca.key" 2>/dev/null || true
install -m 0644 -o root -g root "$ETC/ca/ca.crt" "$ETC/mqtt/ca.crt"  # the edge trusts it
install -m 0644 -o root -g "$BROKER_GROUP" "$ETC/ca/ca.crt" "$ETC/ca/server.crt" "$BROKER/certs/"
install -m 0640 -o root -g "$BROKER_GROUP" "$ETC/ca/server.key" "$BROKER/certs/"

# 8. broker config, ACL, password file ---------------------------------------------------
log "broker config $BROKER"
"$PY" -m edge.broker_config --conf-dir "$BROKER" --runtime-conf-dir /etc/mosquitto/storeside \
    --data-dir /var/lib/mosquitto --listen 8883 --group "$BROKER_GROUP" >/dev/null
db_args=()
[ -e "$LIB/edge.db" ] && db_args=(--db "$LIB/edge.db")
"$PY" -m edge.cli mqtt-passwd --secret-file "$ETC/mqtt/secret" --services-dir "$ETC/mqtt" \
    "${db_args[@]}" --out "$BROKER/passwd" --group "$BROKER_GROUP" >/dev/null

# 9. systemd units, journald limits --------------------------------------------------------
units=(storeside-edge.service storeside-mqtt-passwd.service storeside-mqtt-passwd.timer
       storeside-mqtt-passwd.path)
[ $WITH_HUB -eq 0 ] || units+=(storeside-hub.service)
for unit in "${units[@]}"; do
    install -m 0644 -o root -g root "$REPO/deploy/systemd/$unit" "$UNITS/$unit"
done
install -d -m 0755 "$UNITS/mosquitto.service.d"
install -m 0644 "$REPO/deploy/systemd/mosquitto.service.d/storeside.conf" "$UNITS/mosquitto.service.d/"
install -m 0644 "$REPO/deploy/journald/storeside.conf" "$P/etc/systemd/journald.conf.d/"
if [ $DO_SYSTEMD -eq 1 ]; then
    log "enabling services"
    systemctl daemon-reload
    systemctl restart systemd-journald
    systemctl enable --now chrony.service 2>/dev/null || true
    systemctl enable mosquitto.service storeside-edge.service storeside-mqtt-passwd.timer \
        storeside-mqtt-passwd.path
    systemctl restart mosquitto.service
    systemctl restart storeside-edge.service
    systemctl start storeside-mqtt-passwd.timer storeside-mqtt-passwd.path
    [ $WITH_HUB -eq 0 ] || systemctl enable storeside-hub.service
fi
log "done: edge settings $ETC/edge.toml, broker on :8883 (TLS), CA $ETC/mqtt/ca.crt"
