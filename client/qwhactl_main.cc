// qwhactl: the command line of qwha. Everything but reading the process
// environment lives in cli.h (RunQwhactl), where tests drive it.
#include <sys/ioctl.h>
#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include "client/cli.h"

extern char** environ;

int main(int argc, char** argv) {
  qwha::client::CliEnvironment environment;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    std::string text(*entry);
    size_t equals = text.find('=');
    if (equals != std::string::npos)
      environment.env[text.substr(0, equals)] = text.substr(equals + 1);
  }
  environment.stdout_is_tty = isatty(STDOUT_FILENO) == 1;
  environment.stderr_is_tty = isatty(STDERR_FILENO) == 1;
  struct winsize size;
  if (environment.stdout_is_tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0) {
    environment.terminal_width = size.ws_col;
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  int code = qwha::client::RunQwhactl(args, environment, std::cout, std::cerr);
  std::cout.flush();
  return code;
}
