# shellcheck shell=bash
# The secured mode of scripts/kafka.sh (TW_KAFKA_SECURITY=1), sourced by it: a broker
# that accepts only authenticated clients and enforces ACLs.
#
#   port      SASL_SSL, SCRAM-SHA-512                      (default 29192)
#   port+1    SASL_PLAINTEXT, PLAIN
#   port+2    SSL with client certificates (mutual TLS); also the broker's own listener
#   port+3    KRaft controller (SSL with client certificates)
#
# On the first start it makes, in $state/tls: a throwaway CA (ca.pem), the broker's
# certificate (CN=broker, for 127.0.0.1 and localhost), a client certificate
# (client.pem/client.key, CN=tidewater), a second CA nobody trusts (untrusted-ca.pem,
# for tests), and random passwords for the SASL users `admin` (a super user) and
# `tidewater` (no rights until ACLs grant them), created as SCRAM credentials when the
# storage is formatted and as PLAIN users of the SASL_PLAINTEXT listener. The KRaft
# StandardAuthorizer runs with allow.everyone.if.no.acl.found=false; super users are the
# broker's own principal (User:broker) and User:admin. TLS principals are the
# certificate's CN (User:tidewater).
#
# Extra commands in this mode:
#   scripts/kafka.sh clients        print a ready-to-paste [kafka] configuration per listener
#   scripts/kafka.sh env            print the same facts as shell variables (for tests)
#   scripts/kafka.sh acl add|remove ACL lines from stdin (`tidewater acl` output),
#                                   applied as User:admin through Kafka's admin API

# Defaults of the secured broker: its own ports, beside the plain broker (19092) and the
# three-node cluster (19192-19197).
secure_defaults() {
  export TW_KAFKA_PORT="${TW_KAFKA_PORT:-29192}"
  export TW_KAFKA_CONTROLLER_PORT="${TW_KAFKA_CONTROLLER_PORT:-$((TW_KAFKA_PORT + 3))}"
}

secure_tls="" # set by secure_paths

secure_paths() {
  secure_tls="$state/tls"
  sasl_plain_port=$((port + 1))
  mtls_port=$((port + 2))
}

secure_rand() { openssl rand -hex 16; }

# A certificate signed by the throwaway CA: $1 name, $2 subject CN, $3 subjectAltName.
secure_issue() {
  local name="$1" cn="$2" san="$3" dir="$secure_tls"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key" 2>/dev/null
  openssl req -new -key "$dir/$name.key" -subj "/CN=$cn" -out "$dir/$name.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' \
    "$san" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 825 -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.pem" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

secure_ca() {
  local name="$1" cn="$2" dir="$secure_tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 -sha256 \
    -subj "/CN=$cn" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$dir/$name.key" -out "$dir/$name.pem" 2>/dev/null
}

# The CA, certificates and passwords, made once per state folder.
secure_material() {
  if [[ -f "$secure_tls/.complete" ]]; then return 0; fi
  need openssl "the secured broker's certificates are made with openssl"
  say "making a throwaway CA, certificates and passwords in $secure_tls"
  rm -rf "$secure_tls"
  mkdir -p "$secure_tls"
  chmod 700 "$secure_tls"
  secure_ca ca "Tidewater test CA"
  secure_ca untrusted-ca "Tidewater untrusted test CA"
  secure_issue broker broker "IP:127.0.0.1,DNS:localhost"
  secure_issue client tidewater "DNS:tidewater"
  cat "$secure_tls/broker.key" "$secure_tls/broker.pem" >"$secure_tls/broker-keystore.pem"
  {
    echo "admin_password=$(secure_rand)"
    echo "tidewater_password=$(secure_rand)"
  } >"$secure_tls/users.env"
  printf '%s' "$(secure_get admin_password)" >"$secure_tls/admin.password"
  printf '%s' "$(secure_get tidewater_password)" >"$secure_tls/tidewater.password"
  chmod 600 "$secure_tls"/*.key "$secure_tls"/*.password "$secure_tls/users.env" \
    "$secure_tls/broker-keystore.pem"
  touch "$secure_tls/.complete"
}

secure_get() { sed -n "s/^$1=//p" "$secure_tls/users.env"; }

# The admin client's properties (Kafka's Java client) for the ready check and ACLs.
secure_admin_properties() {
  cat >"$secure_tls/admin.properties" <<EOP
bootstrap.servers=127.0.0.1:$port
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(secure_get admin_password)";
ssl.truststore.type=PEM
ssl.truststore.location=$secure_tls/ca.pem
EOP
  chmod 600 "$secure_tls/admin.properties"
}

secure_write_config() {
  secure_paths
  mkdir -p "$data" "$state/logs"
  secure_material
  secure_admin_properties
  local admin_pw tw_pw
  admin_pw="$(secure_get admin_password)"
  tw_pw="$(secure_get tidewater_password)"
  # The SCRAM users, created when the storage is formatted (kafka.sh's format_storage,
  # after this). Set here, once the passwords exist: on a first start they do only now.
  format_extra=(
    --add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pw]"
    --add-scram "SCRAM-SHA-512=[name=tidewater,password=$tw_pw]"
  )
  secure_plain_write_config
  cat >>"$conf" <<EOF2
# Secured mode (scripts/kafka/secure.sh).
listeners=SASL_SSL://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$sasl_plain_port,MTLS://127.0.0.1:$mtls_port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=SASL_SSL://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$sasl_plain_port,MTLS://127.0.0.1:$mtls_port
listener.security.protocol.map=SASL_SSL:SASL_SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,MTLS:SSL,CONTROLLER:SSL
inter.broker.listener.name=MTLS
controller.listener.names=CONTROLLER
ssl.keystore.type=PEM
ssl.keystore.location=$secure_tls/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$secure_tls/ca.pem
listener.name.mtls.ssl.client.auth=required
listener.name.controller.ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([^,]+).*\$/\$1/,DEFAULT
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="$admin_pw" user_tidewater="$tw_pw";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:broker;User:admin
EOF2
  secure_last_wins "$conf"
  chmod 600 "$conf"
}

# Keeps, for every key, only its last line (the secured value), in the order written.
secure_last_wins() {
  local file="$1"
  tac "$file" | awk '/^#/ || !NF { print; next } { k = substr($0, 1, index($0, "=")); if (!(k in seen)) { seen[k] = 1; print } }' | tac >"$file.tmp"
  mv "$file.tmp" "$file"
}

# kafka.sh's ready check (scripts/kafka/Ready.java) as User:admin over SASL_SSL, with the
# client settings of admin.properties; $1 (optional) as there: seconds to keep asking.
secure_ready_check() {
  secure_paths
  [[ -f "$secure_tls/admin.properties" ]] || return 1
  tool_compile Ready
  kafka_tool Ready "127.0.0.1:$port" --config "$secure_tls/admin.properties" ${1:+--wait "$1"} \
    >/dev/null 2>&1
}

# Ready-to-paste client configurations, one per listener.
cmd_clients() {
  secure_paths
  [[ -f "$secure_tls/.complete" ]] || die "no secured broker yet: run TW_KAFKA_SECURITY=1 $0 start"
  cat <<EOC
# Secured broker from scripts/kafka.sh (TW_KAFKA_SECURITY=1). Principals: User:tidewater
# (no rights until ACLs grant them: tidewater acl ... | TW_KAFKA_SECURITY=1 $0 acl add)
# and User:admin (a super user). Passwords are in $secure_tls/*.password.

# SASL_SSL with SCRAM-SHA-512
[kafka]
bootstrap_servers = "127.0.0.1:$port"
[kafka.security]
protocol = "sasl_ssl"
sasl_mechanism = "SCRAM-SHA-512"
username = "tidewater"
password_file = "$secure_tls/tidewater.password"
ca_file = "$secure_tls/ca.pem"

# SASL_PLAINTEXT with PLAIN
[kafka]
bootstrap_servers = "127.0.0.1:$sasl_plain_port"
[kafka.security]
protocol = "sasl_plaintext"
sasl_mechanism = "PLAIN"
username = "tidewater"
password_file = "$secure_tls/tidewater.password"

# Mutual TLS (principal User:tidewater, the certificate's CN)
[kafka]
bootstrap_servers = "127.0.0.1:$mtls_port"
[kafka.security]
protocol = "ssl"
ca_file = "$secure_tls/ca.pem"
cert_file = "$secure_tls/client.pem"
key_file = "$secure_tls/client.key"
EOC
}

# The same facts as shell variables, for scripts and tests.
cmd_env() {
  secure_paths
  [[ -f "$secure_tls/.complete" ]] || die "no secured broker yet: run TW_KAFKA_SECURITY=1 $0 start"
  cat <<EOE
TW_SECURE_DIR=$secure_tls
TW_SECURE_SASL_SSL=127.0.0.1:$port
TW_SECURE_SASL_PLAINTEXT=127.0.0.1:$sasl_plain_port
TW_SECURE_MTLS=127.0.0.1:$mtls_port
EOE
}

# ACL lines (`tidewater acl` output) from stdin, added or removed as User:admin.
cmd_acl() {
  secure_paths
  local mode="${1:-}"
  [[ $mode == add || $mode == remove ]] || die "usage: $0 acl add|remove < acl-lines"
  [[ -f "$secure_tls/admin.properties" ]] || die "no secured broker yet: run TW_KAFKA_SECURITY=1 $0 start"
  kafka_tool SecureAdmin "$secure_tls/admin.properties" "acl-$mode"
}

# Runs a command of this mode (see secure_handles).
secure_command() {
  case "${1:-}" in
    clients) cmd_clients ;;
    env) cmd_env ;;
    acl) shift; resolve_jars; cmd_acl "$@" ;;
  esac
}

# Called by kafka.sh once its own functions are defined: keeps its plain configuration
# writer under another name and puts the secured steps in place of its own.
secure_install() {
  secure_paths
  eval "secure_plain_$(declare -f write_config)"
  write_config() { secure_write_config; }
  ready_check() { secure_ready_check "$@"; }
}

# Whether $1 is a command of this mode.
secure_handles() { [[ "${1:-}" == clients || "${1:-}" == env || "${1:-}" == acl ]]; }
