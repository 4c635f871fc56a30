// Readiness probe for scripts/kafka.sh: asks the broker for cluster metadata with Kafka's
// own admin client and exits 0 only when it answers with at least one broker.
// Run as a single-file source program: java -cp "<kafka libs>/*" Ready.java HOST:PORT
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class Ready {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "4000");
        try (Admin admin = Admin.create(props)) {
            var nodes = admin.describeCluster().nodes().get(5, TimeUnit.SECONDS);
            if (nodes.isEmpty()) {
                System.exit(1);
            }
            nodes.forEach(n -> System.out.println(n.host() + ":" + n.port()));
        } catch (Exception e) {
            System.err.println(e);
            System.exit(1);
        }
    }
}
