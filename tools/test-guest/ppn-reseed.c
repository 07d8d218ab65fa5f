// ppn-reseed HEX: the test guest's fresh randomness after a snapshot restore. Mixes the bytes
// HEX names into the kernel's entropy pool, credits them and reseeds the CRNG at once, so that
// two clones of one template never read the same /dev/urandom stream (a kernel with the
// vmgenid driver does this by itself; the test guest's cloud kernel has none).
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char** argv) {
  struct {
    struct rand_pool_info info;
    unsigned char bytes[64];
  } e;
  if (argc != 2) return 2;
  size_t n = strlen(argv[1]) / 2;
  if (n == 0 || n > sizeof(e.bytes)) return 2;
  for (size_t i = 0; i < n; ++i) {
    unsigned int b;
    if (sscanf(argv[1] + 2 * i, "%2x", &b) != 1) return 2;
    e.bytes[i] = (unsigned char)b;
  }
  e.info.entropy_count = (int)(n * 8);
  e.info.buf_size = (int)n;
  int fd = open("/dev/urandom", O_WRONLY);
  if (fd < 0) return 1;
  if (ioctl(fd, RNDADDENTROPY, &e) != 0) return 1;
  if (ioctl(fd, RNDRESEEDCRNG) != 0) return 1;
  close(fd);
  return 0;
}
