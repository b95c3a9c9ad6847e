# Cargo's output, shortened for the scripts: each of voipwall's own crates
# by name, the dependencies as a running count (one line per 20), errors
# and warnings in full, and a note when the build goes quiet to link.
/^ *Compiling voipwall/ || /^ *Checking voipwall/ { print "  " $1 " " $2; fflush(); next }
/^ *(Compiling|Checking) / { n++; if (n % 20 == 0) { printf "  %d dependencies built...\n", n; fflush() } next }
/^ *Finished/ { print "  " $0; fflush(); next }
/^(error|warning)/ { show = 1 }
/^$/ { show = 0 }
show { print; fflush() }
