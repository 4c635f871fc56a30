// Readiness probe for scripts/kafka.sh: asks the broker for cluster metadata with Kafka's
// own admin client and exits 0 only when it answers with at least one broker.
//
//   Ready HOST:PORT [--wait SECONDS] [--config FILE]
//
//   --wait SECONDS  keep asking, in this one JVM, until the broker answers or SECONDS have
//                   passed: a fresh client per try, each try bounded by the time left
//                   (15 s at most), 0.5 s between tries. Without it: one try of 4 s
//                   (8 s with --config).
//   --config FILE   admin client properties (the secured broker's SASL/TLS settings) read
//                   first; HOST:PORT stays the bootstrap server.
//
// Exit status: 0 ready (the brokers' HOST:PORT on stdout), 1 not ready (the last error on
// stderr), 2 usage or an unreadable FILE. scripts/kafka.sh compiles it once with javac
// into its cache; it also runs as a single-file source program:
//   java -cp "<kafka libs>/*" Ready.java HOST:PORT [--wait SECONDS] [--config FILE]
import java.io.FileReader;
import java.io.IOException;
import java.time.Duration;
import java.util.Collection;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.common.Node;

public class Ready {
    public static void main(String[] args) throws Exception {
        String bootstrap = null;
        String config = null;
        long waitMs = 0;
        try {
            for (int i = 0; i < args.length; i++) {
                switch (args[i]) {
                    case "--wait" -> waitMs = (long) (Double.parseDouble(args[++i]) * 1000);
                    case "--config" -> config = args[++i];
                    default -> {
                        if (bootstrap != null || args[i].startsWith("--")) {
                            usage();
                        }
                        bootstrap = args[i];
                    }
                }
            }
        } catch (ArrayIndexOutOfBoundsException | NumberFormatException e) {
            usage();
        }
        if (bootstrap == null || waitMs < 0) {
            usage();
        }

        Properties props = new Properties();
        if (config != null) {
            try (FileReader r = new FileReader(config)) {
                props.load(r);
            } catch (IOException e) {
                System.err.println("cannot read " + config + ": " + e);
                System.exit(2);
            }
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        // TLS and SASL handshakes of a cold JVM on a busy machine take longer.
        int tryMs = config != null ? 8000 : 4000;
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, String.valueOf(config != null ? 8000 : 3000));
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, String.valueOf(tryMs));

        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(waitMs);
        String last = "not ready";
        while (true) {
            long leftMs = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
            // Waiting, a try may use what is left (up to 15 s): the client retries the
            // connection inside it, and a starved, cold JVM gets time to load its classes.
            int timeoutMs = waitMs == 0 ? tryMs : (int) Math.max(1000, Math.min(15000, leftMs));
            Admin admin = null;
            try {
                admin = Admin.create(props);
                Collection<Node> nodes = admin
                        .describeCluster(new DescribeClusterOptions().timeoutMs(timeoutMs))
                        .nodes()
                        .get(timeoutMs + 1000L, TimeUnit.MILLISECONDS);
                if (!nodes.isEmpty()) {
                    nodes.forEach(n -> System.out.println(n.host() + ":" + n.port()));
                    admin.close(Duration.ofSeconds(1));
                    System.exit(0);
                }
                last = "the cluster metadata lists no broker";
            } catch (ExecutionException e) {
                last = String.valueOf(e.getCause());
            } catch (Exception e) {
                last = e.toString();
            } finally {
                if (admin != null) {
                    admin.close(Duration.ofMillis(500));
                }
            }
            leftMs = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
            if (leftMs <= 0) {
                break;
            }
            Thread.sleep(Math.min(500, leftMs));
        }
        System.err.println("not ready: " + last);
        System.exit(1);
    }

    private static void usage() {
        System.err.println("usage: Ready HOST:PORT [--wait SECONDS] [--config FILE]");
        System.exit(2);
    }
}
