package tickfetch.peers;

import java.util.HashMap;
import java.util.Map;
import java.util.Set;

/**
 * {@code --name value} arguments, checked against a fixed set of names. Every
 * mistake is a {@link Bad} carrying one line for the user; {@link #fail} prints
 * it and exits 2.
 */
final class Args {
    static final class Bad extends RuntimeException {
        private static final long serialVersionUID = 1L;
        /** Whether the usage line helps (a wrong argument, not a missing topic). */
        final boolean showUsage;

        Bad(String message) {
            this(message, true);
        }

        Bad(String message, boolean showUsage) {
            super(message);
            this.showUsage = showUsage;
        }
    }

    private final Map<String, String> values = new HashMap<>();

    Args(String[] argv, Set<String> known, Set<String> flags) {
        for (int i = 0; i < argv.length; i++) {
            String name = argv[i];
            if (!name.startsWith("--") || !(known.contains(name) || flags.contains(name))) {
                throw new Bad("unknown argument " + name);
            }
            if (flags.contains(name)) {
                values.put(name, "true");
            } else if (i + 1 >= argv.length) {
                throw new Bad(name + " needs a value");
            } else {
                values.put(name, argv[++i]);
            }
        }
    }

    String str(String name) {
        String v = values.get(name);
        if (v == null || v.isEmpty()) {
            throw new Bad("missing " + name);
        }
        return v;
    }

    String str(String name, String fallback) {
        return values.getOrDefault(name, fallback);
    }

    boolean flag(String name) {
        return values.containsKey(name);
    }

    /** A non-negative integer; {@code fallback} when absent ({@code null}: required). */
    long num(String name, Long fallback) {
        String v = values.get(name);
        if (v == null) {
            if (fallback == null) {
                throw new Bad("missing " + name);
            }
            return fallback;
        }
        try {
            long n = Long.parseLong(v);
            if (n < 0) {
                throw new NumberFormatException();
            }
            return n;
        } catch (NumberFormatException e) {
            throw new Bad(name + " must be a non-negative integer, not " + v);
        }
    }

    static void fail(String program, String usage, Bad bad) {
        System.err.println(program + ": " + bad.getMessage()
                + (bad.showUsage ? " (usage: " + program + " " + usage + ")" : ""));
        System.exit(2);
    }
}
