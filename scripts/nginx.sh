# nginx.sh: the nginx configuration the benchmarks run nginx with, one of
# their own: pid, logs and temporary files in a work directory, nothing
# written to system paths, no access log.
#
# Library (source it):
#   zc_nginx_conf WORK LISTEN ROOT CONNECTIONS NOFILE [DIRECTIVE...]
#     prints a config for one worker with CONNECTIONS connections (and a
#     descriptor limit of NOFILE, or - for the default) serving ROOT on
#     LISTEN (ADDR:PORT); each DIRECTIVE (e.g. "sendfile on") goes into the
#     http block.

zc_nginx_conf() {
    local work=$1 listen=$2 root=$3 conns=$4 nofile=$5 d
    shift 5
    echo "worker_processes 1;"
    [[ $nofile == - ]] || echo "worker_rlimit_nofile $nofile;"
    cat <<CONF
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections $conns; }
http {
    access_log off;
    client_body_temp_path $work/nginx-body;
    proxy_temp_path $work/nginx-proxy;
    fastcgi_temp_path $work/nginx-fastcgi;
    uwsgi_temp_path $work/nginx-uwsgi;
    scgi_temp_path $work/nginx-scgi;
    default_type application/octet-stream;
CONF
    for d in "$@"; do
        echo "    $d;"
    done
    cat <<CONF
    server {
        listen $listen;
        root $root;
    }
}
CONF
}
