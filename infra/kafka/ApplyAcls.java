// Creates Kafka ACLs through Kafka's own admin client, signed in as the
// stack's super user: `cargo xtask up` runs it as a single-file program on
// the broker's classpath (the Rust client has no ACL calls). Creating an ACL
// that exists changes nothing, so it runs on every `up`.
//
// Usage: java -cp '<kafka-libs>/*' ApplyAcls.java <bootstrap servers>
//   with KAFKA_ADMIN_PASSWORD set, and one ACL per line on stdin:
//   <principal> <topic|group> <literal|prefixed> <resource name> <Read|Write|Describe>

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Properties;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class ApplyAcls {
    public static void main(String[] args) throws Exception {
        if (args.length != 1 || System.getenv("KAFKA_ADMIN_PASSWORD") == null) {
            System.err.println("usage: KAFKA_ADMIN_PASSWORD=... java ApplyAcls.java <bootstrap servers> < acls");
            System.exit(2);
        }
        List<AclBinding> bindings = new ArrayList<>();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            if (line.isBlank()) {
                continue;
            }
            String[] f = line.trim().split(" ");
            if (f.length != 5) {
                throw new IllegalArgumentException("not an ACL line: " + line);
            }
            // The enums' own names are upper case (PatternType's lookup is case-sensitive).
            ResourceType type = ResourceType.fromString(f[1].toUpperCase(Locale.ROOT));
            PatternType pattern = PatternType.fromString(f[2].toUpperCase(Locale.ROOT));
            ResourcePattern resource = new ResourcePattern(type, f[3], pattern);
            AclOperation operation = AclOperation.fromString(f[4].toUpperCase(Locale.ROOT));
            if (resource.resourceType() == ResourceType.UNKNOWN || resource.patternType() == PatternType.UNKNOWN
                    || operation == AclOperation.UNKNOWN) {
                throw new IllegalArgumentException("unknown resource, pattern or operation: " + line);
            }
            AccessControlEntry entry =
                    new AccessControlEntry("User:" + f[0], "*", operation, AclPermissionType.ALLOW);
            bindings.add(new AclBinding(resource, entry));
        }
        Properties config = new Properties();
        config.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        config.put("security.protocol", "SASL_PLAINTEXT");
        config.put("sasl.mechanism", "SCRAM-SHA-512");
        config.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required "
                + "username=\"admin\" password=\"" + System.getenv("KAFKA_ADMIN_PASSWORD") + "\";");
        try (Admin admin = Admin.create(config)) {
            admin.createAcls(bindings).all().get();
        }
        System.out.println("applied " + bindings.size() + " ACLs");
    }
}
