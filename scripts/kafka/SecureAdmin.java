// Admin requests to the secured broker of scripts/kafka.sh (TW_KAFKA_SECURITY=1), made as
// the super user through Kafka's own admin client.
// scripts/kafka.sh compiles it once (javac); it also runs as a single-file source program:
//   java -cp "<kafka libs>/*" SecureAdmin.java ADMIN.properties ready
//       exit 0 when the broker answers a metadata request and lists itself (kafka.sh's
//       own ready check is Ready.java --config ADMIN.properties)
//   java -cp "<kafka libs>/*" SecureAdmin.java ADMIN.properties acl-add|acl-remove
//       ACL lines from stdin, as `tidewater acl` prints them:
//       PRINCIPAL OPERATION RESOURCE-TYPE PATTERN-TYPE NAME   (e.g.
//       User:tidewater WRITE TOPIC LITERAL tw.status); `#` starts a comment
import java.io.BufferedReader;
import java.io.FileReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class SecureAdmin {
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: SecureAdmin ADMIN.properties ready|acl-add|acl-remove");
            System.exit(2);
        }
        Properties props = new Properties();
        try (FileReader r = new FileReader(args[0])) {
            props.load(r);
        }
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        try (Admin admin = Admin.create(props)) {
            switch (args[1]) {
                case "ready" -> {
                    var nodes = admin.describeCluster().nodes().get(8, TimeUnit.SECONDS);
                    if (nodes.isEmpty()) {
                        System.exit(1);
                    }
                }
                case "acl-add" -> {
                    List<AclBinding> acls = read();
                    admin.createAcls(acls).all().get(30, TimeUnit.SECONDS);
                    System.err.println("added " + acls.size() + " ACLs");
                }
                case "acl-remove" -> {
                    List<AclBindingFilter> filters = new ArrayList<>();
                    for (AclBinding b : read()) {
                        filters.add(b.toFilter());
                    }
                    admin.deleteAcls(filters).all().get(30, TimeUnit.SECONDS);
                    System.err.println("removed " + filters.size() + " ACLs");
                }
                default -> {
                    System.err.println("unknown command " + args[1]);
                    System.exit(2);
                }
            }
        } catch (Exception e) {
            System.err.println(e);
            System.exit(1);
        }
    }

    static List<AclBinding> read() throws Exception {
        List<AclBinding> out = new ArrayList<>();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        String line;
        while ((line = in.readLine()) != null) {
            line = line.strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            String[] f = line.split("\\s+");
            if (f.length != 5) {
                throw new IllegalArgumentException("not an ACL line: " + line);
            }
            AclOperation op = AclOperation.valueOf(f[1].toUpperCase(Locale.ROOT));
            ResourceType type = ResourceType.valueOf(f[2].toUpperCase(Locale.ROOT));
            PatternType pattern = PatternType.valueOf(f[3].toUpperCase(Locale.ROOT));
            out.add(new AclBinding(
                new ResourcePattern(type, f[4], pattern),
                new AccessControlEntry(f[0], "*", op, AclPermissionType.ALLOW)));
        }
        return out;
    }
}
